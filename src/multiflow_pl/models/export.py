"""A trained model as one function of images (backbone -> flow -> scores), and its export.

:class:`ScoringModel` is what ``multiflow_pl.predict`` runs and what ``multiflow_pl.export`` writes, so
an exported model gives the same scores as the Python one. It scores exactly as
``MultiFlowModule.score_batch`` does (tests compare the two), but holds only plain modules, so
``torch.export`` captures it whole. Its outputs, in :data:`OUTPUT_NAMES` order: image scores [B,V],
sample scores (max and mean over views) [B], anomaly maps [B,V,M,M].

Formats (:data:`FORMATS`): ``torch.export``'s ExportedProgram (``.pt2``, loaded with
``torch.export.load``; AOTInductor compiles it for C++) and ONNX (``.onnx``, through the ONNX exporter of
``torch.onnx``; needs the ``export`` extra: ``pip install 'multiflow_pl[export]'``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from multiflow_pl.data.foreground import auto_foreground
from multiflow_pl.evaluation.scores import anomaly_maps, image_scores, mask_background, sample_scores
from multiflow_pl.models.module import MultiFlowModule

OUTPUT_NAMES = ("image", "sample_max", "sample_mean", "maps")
EXPORTABLE_FOREGROUND = ("none", "auto")
FORMATS = {"exported_program": "multiflow.pt2", "onnx": "multiflow.onnx"}
"""Export format -> file name."""


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


def export_model(model: ScoringModel, path: str | Path, format: str, example_batch: int = 2) -> Path:
    """Export ``model`` for its view count and input size (any batch size) and save it atomically.

    The saved model takes images [B,V,3,S,S] (float RGB in [0,1]) and returns the :data:`OUTPUT_NAMES`
    tuple. ``format`` is a key of :data:`FORMATS`.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; supported: {', '.join(FORMATS)}.")
    if model.foreground not in EXPORTABLE_FOREGROUND:
        raise ValueError(
            f"Cannot export a model with foreground={model.foreground!r}: masks read from a folder are not "
            f"part of the model. Use a model trained with data.foreground in {EXPORTABLE_FOREGROUND}."
        )
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    for module in frozen.modules():
        if hasattr(module, "conv_algorithm"):
            # Winograd's chunking follows the batch size, which an export keeps symbolic; the library's
            # convolutions compute the same function (up to rounding) on every device.
            module.conv_algorithm = "direct"
        for name, buffer in module.named_buffers(recurse=False):
            if not buffer.is_contiguous():  # the archive format stores strided views of buffers poorly
                setattr(module, name, buffer.contiguous())
    example = torch.rand(example_batch, model.n_views, 3, model.input_size, model.input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(frozen, (example,), dynamic_shapes=({0: batch},), strict=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        if format == "exported_program":
            torch.export.save(program, tmp)
        else:
            _require_onnx()
            torch.onnx.export(
                program,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=list(OUTPUT_NAMES),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_exported(
    path: str | Path, device: str = "cpu"
) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """A function images [B,V,3,S,S] -> the :data:`OUTPUT_NAMES` tuple, from a file written by
    :func:`export_model` (``.pt2`` or ``.onnx``, told by the suffix)."""
    path = Path(path)
    if path.suffix == ".onnx":
        _require_onnx()
        import onnxruntime

        providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(path), providers=providers)

        def run_onnx(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs = session.run(list(OUTPUT_NAMES), {"images": images.detach().float().cpu().numpy()})
            return tuple(torch.from_numpy(output) for output in outputs)

        return run_onnx
    module = torch.export.load(path).module().to(device)

    def run_program(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(module(images.float().to(device)))

    return run_program


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({err}): pip install 'multiflow_pl[export]'."
        ) from err
