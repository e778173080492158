"""Model export: a trained :class:`~multiflow_pl.models.model.MultiFlowModel` as one file, and loading it.

The exported function takes images [B,V,3,S,S] and returns the model's outputs in :data:`OUTPUT_NAMES`
order: image scores [B,V], sample scores (max and mean over views) [B], anomaly maps [B,V,M,M].

Formats (:data:`FORMATS`): ``torch.export``'s ExportedProgram (``.pt2``, loaded with
``torch.export.load``; AOTInductor compiles it for C++) and ONNX (``.onnx``, through the ONNX exporter of
``torch.onnx``; needs the ``export`` extra: ``pip install 'multiflow_pl[export]'``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from multiflow_pl.models.messages import CrossViewSubnet
from multiflow_pl.models.model import OUTPUT_NAMES, MultiFlowModel
from multiflow_pl.utils.atomic import atomic_path

EXPORTABLE_FOREGROUND = ("none", "auto")
FORMATS = {"exported_program": "multiflow.pt2", "onnx": "multiflow.onnx"}
"""Export format -> file name."""


def export_model(model: MultiFlowModel, path: str | Path, format: str, example_batch: int = 2) -> Path:
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
    frozen = _PlainOutputs(copy.deepcopy(model).eval().requires_grad_(False))
    for subnet in [m for m in frozen.modules() if isinstance(m, CrossViewSubnet) and m.kernel is not None]:
        subnet.kernel = subnet.kernel.portable()  # no choices tied to this machine or batch size
    for module in frozen.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if not buffer.is_contiguous():  # the archive format stores strided views of buffers poorly
                setattr(module, name, buffer.contiguous())
    example = torch.rand(example_batch, model.n_views, 3, model.input_size, model.input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(frozen, (example,), dynamic_shapes=({0: batch},), strict=False)
    with atomic_path(path) as tmp:
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
    return Path(path)


class _PlainOutputs(nn.Module):
    """The model with its :class:`~multiflow_pl.models.model.AnomalyScores` as a plain tuple, the form
    both export formats store."""

    def __init__(self, model: MultiFlowModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(images))


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
