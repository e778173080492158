"""The frozen backbone run for speed at prediction time: TorchScript-frozen, on chunks of images, on
several CPU threads at once.

Off by default (``backbone_freeze``, ``backbone_chunk``, ``backbone_streams``: conf/speed/exact.yaml, and
``speed=cpu`` turns them on), so that predict's scores equal the evaluation's bit for bit; on, features
differ from the eager ones by float rounding (~2e-6 relative). Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

log = logging.getLogger(__name__)


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
        streams: chunks run at once, each on a thread of its own with one intra-op CPU thread (1: one chunk
            after the other, each on torch's intra-op threads). Small convolutions keep one core busy far
            better than they split across two, so on CPU ``streams`` = cores beats intra-op threads.
            Needs ``chunk``.
    """

    def __init__(
        self, backbone: nn.Module, freeze: bool = True, chunk: int | None = 5, streams: int = 1
    ) -> None:
        super().__init__()
        if chunk is not None and chunk < 1:
            raise ValueError(f"backbone_chunk={chunk}; expected a positive number of images or null.")
        if streams < 1 or (streams > 1 and chunk is None):
            raise ValueError(
                f"backbone_streams={streams} with backbone_chunk={chunk}; expected a positive number of "
                f"streams, and more than one only with a chunk size."
            )
        self.input_size = backbone.input_size
        self.feature_size = backbone.feature_size
        self.out_channels = backbone.out_channels
        self.chunk = chunk
        self.frozen = bool(freeze)
        self.model = self._freeze(backbone.eval()) if freeze else backbone
        self.streams = streams
        self._pool = ThreadPoolExecutor(streams, thread_name_prefix="backbone") if streams > 1 else None

    def _freeze(self, backbone: nn.Module) -> torch.jit.ScriptModule:
        device = next(backbone.buffers()).device
        example = torch.rand(self.chunk or 1, 3, self.input_size, self.input_size, device=device)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # branches on static shapes
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated (torch >= 2.10)
            traced = torch.jit.trace(backbone, example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    @classmethod
    def configured(
        cls, backbone: nn.Module, freeze: bool | str, chunk: int | None, streams: int | str | None = None
    ) -> nn.Module:
        """``backbone`` itself when no option is on (the exact eager path), else the fast one.

        ``streams`` applies on CPU only (None: 1; ``"auto"``: torch's intra-op thread count, with a chunk
        size); on a GPU it is ignored.
        """
        on_cpu = next(backbone.buffers()).device.type == "cpu"
        if freeze == "auto":
            freeze = on_cpu
        if not isinstance(freeze, bool):
            raise ValueError(f"backbone_freeze={freeze!r}; expected true, false or auto.")
        if streams == "auto":
            streams = torch.get_num_threads() if on_cpu and chunk is not None else 1
        if not isinstance(streams, int | None):
            raise ValueError(f"backbone_streams={streams!r}; expected a positive number or auto.")
        streams = 1 if streams is None else streams
        if streams > 1 and not on_cpu:
            log.info("backbone_streams=%d ignored: the backbone runs on a GPU", streams)
            streams = 1
        if not freeze and chunk is None and streams == 1:
            return backbone
        return cls(backbone, freeze, chunk, streams)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N,3,S,S] in [0,1] -> features [N,C,h,w], ``chunk`` images at a time."""
        if self.chunk is None or images.shape[0] <= self.chunk:
            return self.model(images)
        parts = images.split(self.chunk)
        if self._pool is None:
            return torch.cat([self.model(part) for part in parts])
        threads = torch.get_num_threads()
        try:
            return torch.cat(list(self._pool.map(self._on_one_thread, parts)))
        finally:
            torch.set_num_threads(threads)  # the workers set torch's global count to 1

    def _on_one_thread(self, images: torch.Tensor) -> torch.Tensor:
        """One chunk on a worker thread, with one intra-op thread (OpenMP and MKL count per thread)."""
        torch.set_num_threads(1)
        with torch.no_grad():
            return self.model(images)
