"""A trained model as one function of images (backbone -> flow -> scores), and its TorchScript export.

:class:`ScoringModel` is what ``multiflow_pl.predict`` runs and what ``multiflow_pl.export`` writes, so
an exported model gives the same scores as the Python one. It scores exactly as
``MultiFlowModule.score_batch`` does (tests compare the two), but holds only plain modules, so it can be
traced. Its outputs, in :data:`OUTPUT_NAMES` order: image scores [B,V], sample scores (max and mean over
views) [B], anomaly maps [B,V,M,M].
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from multiflow_pl.data.foreground import auto_foreground
from multiflow_pl.evaluation.scores import anomaly_maps, image_scores, mask_background, sample_scores
from multiflow_pl.models.module import MultiFlowModule

OUTPUT_NAMES = ("image", "sample_max", "sample_mean", "maps")
EXPORTABLE_FOREGROUND = ("none", "auto")
JIT_DEPRECATION = ".*torch.jit.* is deprecated"
"""TorchScript is deprecated upstream in favour of torch.export, which cannot capture the hook-based
backbone yet; TorchScript still works and loads from C++ (libtorch) without Python."""


class ScoringModel(nn.Module):
    """Scores raw images with a trained :class:`MultiFlowModule`.

    Args:
        module: the trained module (its backbone, flow and score settings are used as they are).
        foreground: how foreground masks are made when none are passed: ``"none"`` (all ones) or
            ``"auto"`` (from the images, as the datasets do).
        round_features: round backbone features to float16 first, as the feature cache stores them,
            so the scores equal those of the model evaluated on cached features.
    """

    def __init__(
        self, module: MultiFlowModule, foreground: str = "none", round_features: bool = False
    ) -> None:
        super().__init__()
        if foreground not in ("none", "auto", "folder"):
            raise ValueError(f"foreground={foreground!r}; expected none, auto or folder.")
        self.backbone = module.backbone.eval()
        self.flow = module.flow.eval()
        self.score_reduction = module.score_reduction
        self.score_topk = module.score_topk
        self.eval_size = module.eval_size
        self.foreground = foreground
        self.round_features = round_features
        self.n_views = module.n_views
        self.input_size = module.backbone.input_size
        self.feature_size = module.backbone.feature_size

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, foreground: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images [B,V,3,S,S] in [0,1] (and foreground [B,V,h,w] for ``foreground="folder"``) -> scores."""
        b, v = images.shape[:2]
        flat = images.flatten(0, 1)
        features = self.backbone(flat)
        if self.round_features:
            features = features.half().float()
        if foreground is None:
            if self.foreground == "folder":
                raise ValueError("This model uses foreground masks from a folder: pass them as foreground.")
            if self.foreground == "auto":
                foreground = auto_foreground(flat, self.feature_size).view(b, v, *self.feature_size)
            else:
                foreground = features.new_ones(b, v, *self.feature_size)
        nll = mask_background(self.flow.nll(features.view(b, v, *features.shape[1:])), foreground)
        views = image_scores(nll, self.score_reduction, self.score_topk)
        samples = sample_scores(views)
        return views, samples["max"], samples["mean"], anomaly_maps(nll, self.eval_size)


class _CheckedInput(nn.Module):
    """Rejects images of the wrong shape with a clear message before running the traced model."""

    def __init__(self, traced: torch.jit.ScriptModule, n_views: int, input_size: int) -> None:
        super().__init__()
        self.traced = traced
        self.n_views = n_views
        self.input_size = input_size

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = images.shape
        expected = [self.n_views, 3, self.input_size, self.input_size]
        if images.dim() != 5 or [shape[1], shape[2], shape[3], shape[4]] != expected:
            raise ValueError(
                f"Expected images [B, {self.n_views}, 3, {self.input_size}, {self.input_size}] (float RGB in "
                f"[0, 1], views in training order), got {list(shape)}."
            )
        return self.traced(images.float())


def export_torchscript(model: ScoringModel, path: str | Path, example_batch: int = 2) -> Path:
    """Trace ``model`` for its view count and input size and save it (atomically) as TorchScript.

    The saved model takes images [B,V,3,S,S] for any B and returns the :data:`OUTPUT_NAMES` tuple.
    """
    if model.foreground not in EXPORTABLE_FOREGROUND:
        raise ValueError(
            f"Cannot export a model with foreground={model.foreground!r}: masks read from a folder are not "
            f"part of the model. Use a model trained with data.foreground in {EXPORTABLE_FOREGROUND}."
        )
    example = torch.rand(example_batch, model.n_views, 3, model.input_size, model.input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about the shape checks of the backbone and flow: the shapes are fixed by design.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", JIT_DEPRECATION)
        frozen = copy.deepcopy(model).eval().requires_grad_(False)  # outputs need no autograd graph
        traced = torch.jit.trace(frozen, (example,), check_trace=False)
        scripted = torch.jit.script(_CheckedInput(traced, model.n_views, model.input_size))
        try:
            torch.jit.save(scripted, str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def load_torchscript(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a model written by :func:`export_torchscript` (plain ``torch.jit.load`` works as well)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", JIT_DEPRECATION)
        return torch.jit.load(str(path), map_location=device).eval()
