"""Backbone weights from a local file: read, renamed to timm's names where need be, loaded strictly.

A weights file must fill every tensor of the part of the backbone that runs; anything missing, or of
another shape, stops the run with one message naming it. (timm's own file loading is not strict: it logs
missing keys at INFO level and leaves those weights random.) Files in EfficientNet-PyTorch's naming
(``_conv_stem.weight``, ``_blocks.N...``) are renamed onto timm's EfficientNet by
:mod:`multiflow_pl.models.efficientnet_pytorch_names`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from multiflow_pl.models.efficientnet_pytorch_names import efficientnet_pytorch_names, is_efficientnet_pytorch

log = logging.getLogger(__name__)
UNUSED_IN_EVAL = ("num_batches_tracked",)
"""Buffers that do not change an eval-mode forward pass: not required of a file (hub files may omit them)."""


class WeightsFileError(RuntimeError):
    """A weights file that cannot be read or does not fit the backbone."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a ``torch.save``d state dict (optionally under a
    ``"state_dict"`` or ``"model"`` key), read without unpickling code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as err:  # truncated, damaged or not a weights file at all: the libraries raise many types
        raise WeightsFileError(
            f"Cannot read weights file {path} ({type(err).__name__}: {err}): it is truncated, damaged or "
            f"not a state dict (.pth/.pt/.bin or .safetensors)."
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"Weights file {path} does not hold a state dict of tensors.")
    return dict(state)


def to_timm_names(state: Mapping[str, torch.Tensor], model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """``state`` with timm's names: EfficientNet-PyTorch state dicts are renamed onto ``model`` (the whole
    timm EfficientNet), every tensor to exactly one of the model's; other state dicts are returned as is.
    """
    if not is_efficientnet_pytorch(state):
        return dict(state)
    try:
        names = efficientnet_pytorch_names(model)
    except ValueError as err:
        raise WeightsFileError(f"{path} holds EfficientNet-PyTorch weights, which fit no {err}") from err
    unknown = sorted(set(state) - set(names))
    if unknown:
        raise WeightsFileError(
            f"{path}: {len(unknown)} EfficientNet-PyTorch tensors have no counterpart in this backbone "
            f"(first: {unknown[0]}): weights of another architecture."
        )
    return {names[key]: tensor for key, tensor in state.items()}


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load every tensor of ``model`` (in place) from ``state`` (timm's names); tensors of ``state`` that
    ``model`` lacks (the classifier, layers after the cut) are ignored.

    Raises :class:`WeightsFileError` naming the tensors the file lacks or holds in another shape.
    """
    target = model.state_dict()
    required = [key for key in target if not key.endswith(UNUSED_IN_EVAL)]
    missing = [key for key in required if key not in state]
    misfit = [key for key in required if key in state and state[key].shape != target[key].shape]
    if missing or misfit:
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} of its {len(required)} tensors are missing (first: {missing[0]})"
            )
        if misfit:
            key = misfit[0]
            problems.append(
                f"{len(misfit)} have another shape (first: {key}, {tuple(state[key].shape)} in the file, "
                f"{tuple(target[key].shape)} in the backbone)"
            )
        raise WeightsFileError(
            f"Weights file {path} does not fit the backbone: {'; '.join(problems)}. Pass a file of this "
            f"architecture (timm or EfficientNet-PyTorch names)."
        )
    model.load_state_dict({key: state.get(key, target[key]) for key in target})
    unused = len(set(state) - set(target))
    log.info("Loaded %d tensors from %s (%d of the file's tensors are not used)", len(required), path, unused)
