"""The LightningModule: trains a :class:`MultiFlowModel`'s flow with the paper's loss and tests it.

Evaluation around it lives in callbacks (:mod:`multiflow_pl.callbacks`): the OK/NG threshold is fitted
on validation scores, score tables, prediction pickles and plots are written after testing; the
streaming metrics are a torchmetrics ``Metric`` child of this module, synced by torchmetrics under DDP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from multiflow_pl.evaluation.metrics import AnomalyMetrics
from multiflow_pl.models.backbone import FeatureExtractor
from multiflow_pl.models.checkpoint import restore_backbone, strip_backbone
from multiflow_pl.models.flow import MultiViewFlow, noise_condition
from multiflow_pl.models.model import AnomalyScores, MultiFlowModel
from multiflow_pl.speed.folded_subnet import use_folded_convolutions

RNG_KEY = "multiflow_rng"
CONFIG_KEY = "multiflow_config"


class MultiFlowModule(L.LightningModule):
    """Trains the flow of a :class:`MultiFlowModel` on backbone features of all views and tests it.

    Batches are dicts from :mod:`multiflow_pl.data.dataset`: either cached ``features`` [B,V,C,h,w] or
    ``images`` [B,V,3,S,S] (then the backbone runs here), plus ``foreground`` [B,V,h,w] and, for testing,
    ``masks`` [B,V,1,M,M], ``view_labels`` [B,V], ``label`` [B], ``anomaly_class``, ``key``.
    ``validation_step`` and ``test_step`` return the batch's :class:`AnomalyScores` for the callbacks;
    ``validation_step`` also accumulates ``val_nll`` (logged as ``val/nll``), the training loss's masked NLL
    of the held-out samples without noise conditioning, on which training may stop
    (:class:`~multiflow_pl.callbacks.early_stopping.ValidationNLLStopping`).

    Args:
        backbone: the frozen feature extractor.
        flow: a partial ``MultiViewFlow`` missing ``channels`` and ``n_views``.
        n_views: number of views per sample.
        optimizer: a partial optimizer taking ``params``.
        scheduler: optional partial LR scheduler taking ``optimizer``.
        convolutions: how the flow's subnets compute: ``{"algorithm": "direct" | "auto" | "winograd",
            "dtype": None | "bfloat16"}`` for their folded convolutions
            (:func:`~multiflow_pl.speed.folded_subnet.use_folded_convolutions`; None: direct, the
            parameters' dtype), or ``{"kernel": "plain"}`` for the paper's per-view form (slow).
        noise_std, noise_scale: train-time noise conditioning (used when the flow has noise channels).
        score_reduction, score_topk, eval_size, foreground, round_features: see :class:`MultiFlowModel`.
        metrics: the streaming test metrics.
        backbone_storage: ``"reference"``: checkpoints store where the backbone's weights come from and
            their digest instead of the weights; ``"embedded"``: the weights (a self-contained file).
        run_config: the resolved run configuration, stored in every checkpoint so that evaluate, predict
            and export rebuild the model from the checkpoint alone.

    Checkpoints also carry the RNG state, so a resumed run continues exactly like an uninterrupted one.
    """

    def __init__(
        self,
        backbone: FeatureExtractor,
        flow: Callable[..., MultiViewFlow],
        n_views: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        convolutions: dict | None = None,
        noise_std: float = 0.15,
        noise_scale: float = 20.0,
        score_reduction: str = "max",
        score_topk: float = 0.01,
        eval_size: int = 256,
        foreground: str = "none",
        round_features: bool = False,
        metrics: AnomalyMetrics | None = None,
        backbone_storage: str = "reference",
        run_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = MultiFlowModel(
            backbone,
            flow(channels=backbone.out_channels, n_views=n_views),
            score_reduction=score_reduction,
            score_topk=score_topk,
            eval_size=eval_size,
            foreground=foreground,
            round_features=round_features,
        )
        settings = dict(convolutions or {})
        if settings.pop("kernel", "folded") != "plain":
            use_folded_convolutions(
                self.model.flow, settings.get("algorithm") or "direct", settings.get("dtype")
            )
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.noise_std = noise_std
        self.noise_scale = noise_scale
        self.metrics = metrics if metrics is not None else AnomalyMetrics()
        self.val_nll = MeanMetric()
        self.backbone_storage = backbone_storage
        self.run_config = run_config or {}
        self.test_results: dict[str, float] = {}

    def features(self, batch: dict) -> torch.Tensor:
        """Backbone features [B,V,C,h,w] from the cache or computed from the batch's images."""
        features = batch["features"] if "features" in batch else self.model.extract(batch["images"])
        try:
            self.model.check_features(features)
        except ValueError as err:
            raise ValueError(f"{err} (samples {batch['key'][:3]})") from err
        return features

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = self.features(batch)
        flow = self.model.flow
        cond = None
        if flow.noise_channels > 0:
            x, cond = noise_condition(x, std=self.noise_std, scale=self.noise_scale)
        loss = flow.loss(x, mask=batch["foreground"], cond=cond)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Non-finite training loss ({loss.item()}) at step {self.global_step}, batch of samples "
                f"{batch['key']}. Check those samples' images and features (NaN/inf), or lower the "
                f"learning rate."
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        gammas = self.model.flow.gammas().detach().abs()
        self.log("train/gamma_abs_mean", gammas.mean())

    @torch.no_grad()
    def score_batch(self, batch: dict) -> AnomalyScores:
        """The model's scores of one batch (features from the cache or the backbone)."""
        return self.model.score(self.features(batch), batch["foreground"])

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> AnomalyScores:
        """Scores of held-out samples (the threshold callback fits on them); accumulates their NLL."""
        features = self.features(batch)
        # the training loss without noise: noise conditioning is for training only, as in scoring
        nll = self.model.flow.loss(features, mask=batch["foreground"])
        self.val_nll.update(nll, weight=features.shape[0])
        self.log("val/nll", self.val_nll, on_step=False, on_epoch=True, batch_size=features.shape[0])
        return self.model.score(features, batch["foreground"])

    def on_test_epoch_start(self) -> None:
        self.metrics.reset()

    def test_step(self, batch: dict, batch_idx: int) -> AnomalyScores:
        """Score the batch and feed the metrics; the scores go on to the callbacks."""
        scores = self.score_batch(batch)
        v = scores.image.shape[1]
        self.metrics.update(
            scores.image.flatten(),
            batch["view_labels"].flatten(),
            [key for key in batch["key"] for _ in range(v)],
            scores.maps.flatten(0, 1),
            batch["masks"].flatten(0, 2).bool(),
            sample_classes=[cls for cls in batch["anomaly_class"] for _ in range(v)],
        )
        return scores

    def on_test_epoch_end(self) -> None:
        """Compute the metrics (torchmetrics syncs them over DDP ranks first) and log them."""
        self.test_results = self.metrics.compute()
        self.log_dict({f"test/{k}": v for k, v in self.test_results.items()}, rank_zero_only=True)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.flow.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer=optimizer)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        strip_backbone(checkpoint, self.model.backbone, self.backbone_storage)
        checkpoint[CONFIG_KEY] = self.run_config
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        checkpoint[RNG_KEY] = {"torch": torch.get_rng_state(), "cuda": cuda}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the random stream where the checkpoint left it.

        Lightning calls this before it draws the next epoch's shuffling order, so a resumed run draws the
        same orders and noise as an uninterrupted one, and before it loads the state dict, so the
        backbone weights of a lean checkpoint are put back (and checked) first.
        """
        restore_backbone(checkpoint, self.model.backbone, "the resumed checkpoint")
        rng = checkpoint.get(RNG_KEY)
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
