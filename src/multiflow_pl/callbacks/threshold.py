"""Fitting the OK/NG threshold on the held-out validation samples, every validation epoch."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics.aggregation import CatMetric

from multiflow_pl.models.threshold import CHECKPOINT_KEY, Threshold, fit_threshold, threshold_from_checkpoint

log = logging.getLogger(__name__)


class ThresholdFitting(Callback):
    """Fit :attr:`threshold` on the sample scores (max over views) of each validation epoch.

    Validation batches come from ``data.val_fraction`` of the normal training samples (then the
    ``quantile`` of their scores is the threshold) or from labelled samples (then the F1-optimal one; see
    :func:`multiflow_pl.models.threshold.fit_threshold`). Scores and labels of all DDP ranks are gathered
    by torchmetrics. Every checkpoint carries the threshold of its own weights
    (``checkpoint["multiflow_threshold"]``, read back by evaluate, predict and export); ``val/threshold``
    and ``val/score_median`` are logged.

    Args:
        quantile: quantile of held-out normal sample scores used as the threshold.
    """

    def __init__(self, quantile: float = 0.99) -> None:
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"threshold quantile {quantile} must lie in (0, 1].")
        self.quantile = quantile
        self.threshold: Threshold | None = None
        self._scores = CatMetric(nan_strategy="disable")
        self._labels = CatMetric(nan_strategy="disable")
        self._warned_few_samples = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for values in (self._scores, self._labels):
            values.reset()
            values.to(pl_module.device)  # torchmetrics gathers on the module's device (NCCL needs CUDA)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        scores = outputs.sample_max.detach()
        bad = [key for key, s in zip(batch["key"], scores.tolist(), strict=True) if not math.isfinite(s)]
        if bad:
            raise FloatingPointError(
                f"Non-finite validation scores for samples {bad}. Check those samples' images and features."
            )
        self._scores.update(scores.double())
        self._labels.update(batch["label"].to(scores.device, torch.float64))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._scores.update_count == 0:
            return
        scores, labels = self._scores.compute(), self._labels.compute()
        self.threshold = fit_threshold(scores, labels, self.quantile)
        warning = self.threshold.few_samples_warning()
        if warning and not self._warned_few_samples and trainer.is_global_zero:
            log.warning(warning)
            self._warned_few_samples = True
        pl_module.log_dict(
            {"val/threshold": self.threshold.value, "val/score_median": self.threshold.center},
            rank_zero_only=True,
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.threshold is not None:
            checkpoint[CHECKPOINT_KEY] = self.threshold.to_dict()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.threshold = threshold_from_checkpoint(checkpoint)
