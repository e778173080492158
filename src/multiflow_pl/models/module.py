"""The LightningModule: frozen backbone + MultiViewFlow, the paper's loss, and the test-time scoring."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from multiflow_pl.evaluation.metrics import AnomalyMetrics
from multiflow_pl.evaluation.scores import anomaly_maps, image_scores, mask_background, sample_scores
from multiflow_pl.models.backbone import FeatureExtractor
from multiflow_pl.models.checkpoint import restore_backbone, strip_backbone
from multiflow_pl.models.flow import MultiViewFlow, noise_condition
from multiflow_pl.models.threshold import CHECKPOINT_KEY as THRESHOLD_KEY
from multiflow_pl.models.threshold import Threshold, fit_threshold, threshold_from_checkpoint

log = logging.getLogger(__name__)
RNG_KEY = "multiflow_rng"


class MultiFlowModule(L.LightningModule):
    """Trains a :class:`MultiViewFlow` on backbone features of all views and scores test samples.

    Batches are dicts from :mod:`multiflow_pl.data.dataset`: either cached ``features`` [B,V,C,h,w] or
    ``images`` [B,V,3,S,S] (then the backbone runs here), plus ``foreground`` [B,V,h,w] and, for testing,
    ``masks`` [B,V,1,M,M], ``view_labels`` [B,V], ``key`` and ``image_paths``.

    Args:
        backbone: the frozen feature extractor.
        flow: a partial ``MultiViewFlow`` missing ``channels`` and ``n_views``.
        n_views: number of views per sample.
        optimizer: a partial optimizer taking ``params``.
        scheduler: optional partial LR scheduler taking ``optimizer``.
        noise_std, noise_scale: train-time noise conditioning (used when the flow has noise channels).
        score_reduction, score_topk: how a view's map becomes its image score.
        metrics: the streaming metric accumulator.
        eval_size: side of the anomaly maps used for pixel metrics.
        threshold_quantile: quantile of held-out normal sample scores used as the OK/NG threshold
            (validation batches with anomalous samples give an F1-optimal threshold instead).
        backbone_storage: ``"reference"``: checkpoints store where the backbone's weights come from and
            their digest instead of the weights; ``"embedded"``: the weights (a self-contained file).

    Validation (held-out samples, see ``data.val_fraction``) fits :attr:`threshold` every epoch, so each
    checkpoint carries the threshold of its own weights (``checkpoint["multiflow_threshold"]``). Checkpoints
    also carry the RNG state, so a resumed run continues exactly like an uninterrupted one.
    """

    def __init__(
        self,
        backbone: FeatureExtractor,
        flow: Callable[..., MultiViewFlow],
        n_views: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        noise_std: float = 0.15,
        noise_scale: float = 20.0,
        score_reduction: str = "max",
        score_topk: float = 0.01,
        metrics: AnomalyMetrics | None = None,
        eval_size: int = 256,
        threshold_quantile: float = 0.99,
        backbone_storage: str = "reference",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.flow = flow(channels=backbone.out_channels, n_views=n_views)
        self.n_views = n_views
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.noise_std = noise_std
        self.noise_scale = noise_scale
        self.score_reduction = score_reduction
        self.score_topk = score_topk
        self.metrics = metrics if metrics is not None else AnomalyMetrics()
        self.eval_size = eval_size
        self.view_records: list[dict] = []
        self.test_results: dict[str, float] = {}
        self.run_config: dict = {}
        self.threshold_quantile = threshold_quantile
        self.backbone_storage = backbone_storage
        self.threshold: Threshold | None = None
        self._val_scores: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._warned_few_samples = False

    def features(self, batch: dict) -> torch.Tensor:
        """Backbone features [B,V,C,h,w] from the cache or computed from the batch's images."""
        if "features" in batch:
            return batch["features"]
        images = batch["images"]
        b, v = images.shape[:2]
        feats = self.backbone(images.flatten(0, 1))
        return feats.view(b, v, *feats.shape[1:])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = self.features(batch)
        self._check_views(x, batch)
        cond = None
        if self.flow.noise_channels > 0:
            x, cond = noise_condition(x, std=self.noise_std, scale=self.noise_scale)
        loss = self.flow.loss(x, mask=batch["foreground"], cond=cond)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Non-finite training loss ({loss.item()}) at step {self.global_step}, batch of samples "
                f"{batch['key']}. Check those samples' images and features (NaN/inf), or lower the "
                f"learning rate."
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        gammas = self.flow.gammas().detach().abs()
        self.log("train/gamma_abs_mean", gammas.mean())

    @torch.no_grad()
    def score_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        """Scores of one batch: nll [B,V,h,w], maps [B,V,M,M], image [B,V], sample_max/sample_mean [B]."""
        x = self.features(batch)
        self._check_views(x, batch)
        nll = mask_background(self.flow.nll(x), batch["foreground"])
        views = image_scores(nll, self.score_reduction, self.score_topk)
        samples = sample_scores(views)
        return {
            "nll": nll,
            "maps": anomaly_maps(nll, self.eval_size),
            "image": views,
            "sample_max": samples["max"],
            "sample_mean": samples["mean"],
        }

    def on_validation_epoch_start(self) -> None:
        self._val_scores, self._val_labels = [], []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Collect the sample scores [B] and labels [B] of held-out samples for the threshold."""
        scores = self.score_batch(batch)["sample_max"]
        bad = [
            key for key, score in zip(batch["key"], scores.tolist(), strict=True) if not math.isfinite(score)
        ]
        if bad:
            raise FloatingPointError(
                f"Non-finite validation scores for samples {bad}. Check those samples' images and features."
            )
        self._val_scores.append(scores.detach().cpu())
        self._val_labels.append(batch["label"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        """Fit :attr:`threshold` on all ranks' validation scores; logs ``val/threshold``."""
        if self.trainer.sanity_checking or not self._val_scores:
            return
        parts = [(torch.cat(self._val_scores), torch.cat(self._val_labels))]
        if self.trainer.world_size > 1:
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, parts[0])
            parts = gathered
        scores = torch.cat([score for score, _ in parts])
        labels = torch.cat([label for _, label in parts])
        self.threshold = fit_threshold(scores, labels, self.threshold_quantile)
        warning = self.threshold.few_samples_warning()
        if warning and not self._warned_few_samples and self.trainer.is_global_zero:
            log.warning(warning)
            self._warned_few_samples = True
        self.log_dict(
            {"val/threshold": self.threshold.value, "val/score_median": self.threshold.center},
            rank_zero_only=True,
        )

    def on_test_epoch_start(self) -> None:
        self.metrics.reset()
        self.view_records = []

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """Score the batch, feed the metrics, keep one record per view; return the scores for callbacks."""
        scores = self.score_batch(batch)
        b, v = scores["image"].shape
        keys = [key for key in batch["key"] for _ in range(v)]
        self.metrics.update(
            scores["image"].flatten().cpu(),
            batch["view_labels"].flatten().cpu(),
            keys,
            scores["maps"].flatten(0, 1).cpu(),
            batch["masks"].flatten(0, 2).cpu().bool(),
            [cls for cls in batch["anomaly_class"] for _ in range(v)],
        )
        image = scores["image"].cpu()
        for i in range(b):
            for j, path in enumerate(batch["image_paths"][i]):
                self.view_records.append(
                    {
                        "key": batch["key"][i],
                        "view": j,
                        "image_path": path,
                        "view_label": int(batch["view_labels"][i, j]),
                        "sample_label": int(batch["label"][i]),
                        "sample_class": batch["anomaly_class"][i],
                        "image_score": float(image[i, j]),
                    }
                )
        return scores

    def on_test_epoch_end(self) -> None:
        if self.trainer.world_size > 1:
            gathered: list[list[dict]] = [[] for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(gathered, self.view_records)
            self.view_records = [record for records in gathered for record in records]
        self.test_results = self.metrics.compute()
        self.log_dict({f"test/{k}": v for k, v in self.test_results.items()}, rank_zero_only=True)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=[p for p in self.flow.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer=optimizer)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        strip_backbone(checkpoint, self.backbone, self.backbone_storage)
        checkpoint["multiflow_config"] = self.run_config
        if self.threshold is not None:
            checkpoint[THRESHOLD_KEY] = self.threshold.to_dict()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        checkpoint[RNG_KEY] = {"torch": torch.get_rng_state(), "cuda": cuda}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the threshold and the random stream where the checkpoint left it.

        Lightning calls this before it draws the next epoch's shuffling order, so a resumed run draws the
        same orders and noise as an uninterrupted one, and before it loads the state dict, so the
        backbone weights of a lean checkpoint are put back (and checked) first.
        """
        restore_backbone(checkpoint, self.backbone, "the resumed checkpoint")
        self.threshold = threshold_from_checkpoint(checkpoint)
        rng = checkpoint.get(RNG_KEY)
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def _check_views(self, x: torch.Tensor, batch: dict) -> None:
        if x.shape[1] != self.n_views or x.shape[2] != self.flow.channels:
            raise ValueError(
                f"Batch has {x.shape[1]} views x {x.shape[2]} channels but the model was built for "
                f"{self.n_views} views x {self.flow.channels} channels (samples {batch['key'][:3]})."
            )
