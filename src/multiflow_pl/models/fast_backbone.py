"""The frozen backbone run for speed at prediction time: TorchScript-frozen, on chunks of images.

Off by default (``backbone_freeze``, ``backbone_chunk`` in conf/predict.yaml), so that predict's scores equal
the evaluation's bit for bit; on, features differ from the eager ones by float rounding (~2e-6 relative).
Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class FastBackbone(nn.Module):
    """A frozen feature extractor run for speed: optionally TorchScript-frozen, on chunks of images.

    Args:
        backbone: the extractor (:class:`~multiflow_pl.models.backbone.FeatureExtractor`, in eval mode):
            images [N,3,S,S] -> features [N,C,h,w].
        freeze: trace it with ``torch.jit.trace``, then ``torch.jit.freeze`` and
            ``torch.jit.optimize_for_inference`` (folds batch norm into the convolutions, oneDNN kernels on
            CPU). Same function, different float rounding.
        chunk: images per call (None: the whole batch at once). Results do not depend on it beyond float
            rounding; a cache-sized chunk (one sample's views) avoids re-reading activations from memory.
    """

    def __init__(self, backbone: nn.Module, freeze: bool = True, chunk: int | None = 5) -> None:
        super().__init__()
        if chunk is not None and chunk < 1:
            raise ValueError(f"backbone_chunk={chunk}; expected a positive number of images or null.")
        self.input_size = backbone.input_size
        self.feature_size = backbone.feature_size
        self.out_channels = backbone.out_channels
        self.chunk = chunk
        self.frozen = bool(freeze)
        self.model = self._freeze(backbone.eval()) if freeze else backbone

    def _freeze(self, backbone: nn.Module) -> torch.jit.ScriptModule:
        device = next(backbone.buffers()).device
        example = torch.rand(self.chunk or 1, 3, self.input_size, self.input_size, device=device)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # branches on static shapes
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated (torch >= 2.10)
            traced = torch.jit.trace(backbone, example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    @classmethod
    def configured(cls, backbone: nn.Module, freeze: bool | str, chunk: int | None) -> nn.Module:
        """``backbone`` itself when neither option is on (the exact eager path), else the fast one."""
        if freeze == "auto":
            freeze = next(backbone.buffers()).device.type == "cpu"
        if not isinstance(freeze, bool):
            raise ValueError(f"backbone_freeze={freeze!r}; expected true, false or auto.")
        if not freeze and chunk is None:
            return backbone
        return cls(backbone, freeze, chunk)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N,3,S,S] in [0,1] -> features [N,C,h,w], ``chunk`` images at a time."""
        if self.chunk is None or images.shape[0] <= self.chunk:
            return self.model(images)
        return torch.cat([self.model(part) for part in images.split(self.chunk)])
