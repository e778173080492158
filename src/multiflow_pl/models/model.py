"""MultiFlowModel: the one torch model behind training, testing, prediction and export.

Backbone (or cached features) -> :class:`MultiViewFlow` -> per-pixel NLL -> anomaly maps, image scores and
sample scores. The Lightning module trains its flow; test, ``multiflow_pl.predict`` and
``multiflow_pl.export`` call the same object, so an exported model scores exactly as the tested one.
It holds plain modules only, so ``torch.export`` captures :meth:`MultiFlowModel.forward` whole.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from multiflow_pl.data.features import extract_as_cached
from multiflow_pl.data.foreground import FOREGROUND_MODES, auto_foreground
from multiflow_pl.models.anomaly_map import anomaly_maps, image_scores, mask_background, sample_scores
from multiflow_pl.models.backbone import FeatureExtractor
from multiflow_pl.models.flow import MultiViewFlow


class AnomalyScores(NamedTuple):
    """What the model returns for a batch of B samples of V views."""

    image: torch.Tensor
    """[B,V] view image scores."""
    sample_max: torch.Tensor
    """[B] sample scores, max over views (the official protocol; compared with the threshold)."""
    sample_mean: torch.Tensor
    """[B] sample scores, mean over views (the paper's code)."""
    maps: torch.Tensor
    """[B,V,M,M] anomaly maps at the evaluation size M."""


OUTPUT_NAMES = AnomalyScores._fields
"""The outputs in order, as an exported model returns them."""


class MultiFlowModel(nn.Module):
    """Multi-Flow as a plain torch model.

    Args:
        backbone: the frozen feature extractor.
        flow: the normalizing flow over all views' features.
        score_reduction, score_topk: how a view's NLL map becomes its image score
            (:func:`multiflow_pl.models.anomaly_map.image_scores`).
        eval_size: side M of the anomaly maps.
        foreground: how foreground masks are made when a call passes none: ``"none"`` (all ones),
            ``"auto"`` (from the images, as the datasets do) or ``"folder"`` (masks read from files: the
            caller must pass them).
        round_features: extract backbone features as the feature cache does and round them to float16, as
            it stores them, so that a model trained on cached features scores images exactly as it scored
            its cached test set.
    """

    def __init__(
        self,
        backbone: FeatureExtractor,
        flow: MultiViewFlow,
        score_reduction: str = "max",
        score_topk: float = 0.01,
        eval_size: int = 256,
        foreground: str = "none",
        round_features: bool = False,
    ) -> None:
        super().__init__()
        if foreground not in FOREGROUND_MODES:
            raise ValueError(f"foreground={foreground!r}; expected one of {', '.join(FOREGROUND_MODES)}.")
        self.backbone = backbone
        self.flow = flow
        self.score_reduction = score_reduction
        self.score_topk = score_topk
        self.eval_size = eval_size
        self.foreground = foreground
        self.round_features = round_features

    @property
    def n_views(self) -> int:
        return self.flow.n_views

    @property
    def input_size(self) -> int:
        return self.backbone.input_size

    @property
    def feature_size(self) -> tuple[int, int]:
        return self.backbone.feature_size

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,V,3,S,S] in [0,1] -> backbone features [B,V,C,h,w].

        With ``round_features`` they are rounded to float16, and the exact extractor runs as the feature
        cache runs it (:func:`~multiflow_pl.data.features.extract_as_cached`), so that they equal the cached
        ones bit for bit. A backbone run for speed (:class:`~multiflow_pl.speed.fast_backbone.FastBackbone`)
        rounds differently anyway and keeps its own layout.
        """
        flat = rearrange(images, "b v c h w -> (b v) c h w")
        if self.round_features and isinstance(self.backbone, FeatureExtractor):
            features = extract_as_cached(self.backbone, flat)
        else:
            features = self.backbone(flat)
        if self.round_features:
            features = features.half().float()
        return rearrange(features, "(b v) c h w -> b v c h w", b=images.shape[0])

    def check_features(self, features: torch.Tensor) -> None:
        """Raise ValueError unless features are [B, n_views, channels, h, w] for this model."""
        views, channels = (features.shape[1], features.shape[2]) if features.dim() == 5 else (0, 0)
        if views != self.n_views or channels != self.flow.channels:
            raise ValueError(
                f"Features of shape {list(features.shape)} (batch x views x channels x h x w) do not fit "
                f"the model, built for {self.n_views} views x {self.flow.channels} channels."
            )

    def score(self, features: torch.Tensor, foreground: torch.Tensor) -> AnomalyScores:
        """Features [B,V,C,h,w] and foreground masks [B,V,h,w] in {0,1} -> :class:`AnomalyScores`."""
        self.check_features(features)
        nll = mask_background(self.flow.nll(features), foreground)
        views = image_scores(nll, self.score_reduction, self.score_topk)
        samples = sample_scores(views)
        return AnomalyScores(views, samples["max"], samples["mean"], anomaly_maps(nll, self.eval_size))

    def forward(self, images: torch.Tensor, foreground: torch.Tensor | None = None) -> AnomalyScores:
        """Images [B,V,3,S,S] in [0,1] (and foreground [B,V,h,w], required with ``foreground="folder"``)
        -> :class:`AnomalyScores`."""
        if foreground is None:
            foreground = self.make_foreground(images)
        return self.score(self.extract(images), foreground)

    def make_foreground(self, images: torch.Tensor) -> torch.Tensor:
        """Foreground masks [B,V,h,w] for images [B,V,3,S,S] by this model's ``foreground`` setting."""
        b, v = images.shape[:2]
        if self.foreground == "folder":
            raise ValueError("This model uses foreground masks read from a folder: pass them as foreground.")
        if self.foreground == "auto":
            flat = rearrange(images, "b v c h w -> (b v) c h w")
            return rearrange(auto_foreground(flat, self.feature_size), "(b v) h w -> b v h w", b=b)
        return images.new_ones(b, v, *self.feature_size)
