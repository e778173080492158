"""On-disk feature cache: backbone features extracted once, memory-mapped afterwards.

A cache entry is three files named by a key that hashes everything that changes their content (backbone,
weights, layers, input size, padding, precision, flips, resize, foreground setting and the list of image
files with sizes and mtimes):
``<key>.features.npy`` [N,V,C,h,w] float16, ``<key>.foreground.npy`` [N,V,h,w] uint8 and ``<key>.json``.
Files are written under temporary names and renamed into place, the JSON last, so an interrupted build is
never mistaken for a complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import DataLoader

from multiflow_pl.data.dataset import MultiViewImageDataset, collate_samples
from multiflow_pl.data.npy_rows import npy_rows
from multiflow_pl.utils.atomic import atomic_path, write_atomic
from multiflow_pl.utils.progress import progress

log = logging.getLogger(__name__)
CACHE_VERSION = 1


class FeatureExtractorLike(Protocol):
    """What the data side needs of a backbone: its sizes, a cache identity and images -> features.

    :class:`multiflow_pl.models.backbone.FeatureExtractor` is one; data/ depends on this protocol only,
    never on models/.
    """

    input_size: int
    feature_size: tuple[int, int]
    out_channels: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N,3,S,S] in [0,1] -> features [N,C,h,w]."""

    def cache_signature(self) -> dict[str, object]:
        """Everything about the extractor that changes its features (hashed into cache keys)."""

    def to(self, *args: Any, **kwargs: Any) -> FeatureExtractorLike:
        """Move to a device / memory format, as ``nn.Module.to``."""


def extract_as_cached(extractor: FeatureExtractorLike, images: torch.Tensor) -> torch.Tensor:
    """Features [N,C,h,w] of images [N,3,S,S] computed as the cache computes them: channels-last input
    (oneDNN and cuDNN run the convolutions faster so), in the extractor's own precision (float32 unless
    ``backbone.precision=bfloat16``).

    A model trained on cached features extracts its features from images this way too, so predict gives
    the very scores evaluation gives from the cache. The layout changes float rounding: extracted in
    PyTorch's default layout instead, 0.6% of the demo's float16 features differ from the cached ones.
    """
    return extractor(images.contiguous(memory_format=torch.channels_last))


class FeatureCache:
    """Builds and opens cached backbone features for a :class:`MultiViewImageDataset`.

    Args:
        cache_dir: folder of cache entries (shared by runs and sweeps).
        batch_size: samples per extraction batch (each sample is V images).
        num_workers: DataLoader workers decoding images while the backbone runs.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        show_progress: show a progress bar while extracting.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        batch_size: int = 8,
        num_workers: int = 0,
        device: str = "auto",
        show_progress: bool = True,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = torch.device(
            "cuda"
            if device == "auto" and torch.cuda.is_available()
            else ("cpu" if device == "auto" else device)
        )
        self.show_progress = show_progress

    def key(self, extractor: FeatureExtractorLike, dataset: MultiViewImageDataset) -> str:
        """Hash of every input that changes the cached content."""
        files = []
        for sample in dataset.samples:
            for view in sample.views:
                stat = view.image_path.stat()
                files.append([str(view.image_path), stat.st_size, stat.st_mtime_ns])
        signature = {
            "version": CACHE_VERSION,
            **extractor.cache_signature(),
            "flip_views": sorted(dataset.flip_views),
            "foreground": dataset.foreground,
            "foreground_dir": str(dataset.foreground_dir) if dataset.foreground_dir else None,
            "resize": dataset.resize,
            "files": files,
        }
        blob = json.dumps(signature, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def load_or_build(
        self, extractor: FeatureExtractorLike, dataset: MultiViewImageDataset
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return memory-mapped (features [N,V,C,h,w] float16, foreground [N,V,h,w] uint8)."""
        key = self.key(extractor, dataset)
        n_views = len(dataset.samples[0].views)
        expected = (len(dataset), n_views, extractor.out_channels, *extractor.feature_size)
        opened = self._open(key, expected)
        if opened is not None:
            log.info("Feature cache hit %s (%d samples)", key, len(dataset))
            return opened
        self._build(key, extractor, dataset, expected)
        opened = self._open(key, expected)
        if opened is None:
            raise RuntimeError(f"Feature cache {self.cache_dir / key} could not be read back after writing.")
        return opened

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        base = self.cache_dir / key
        return Path(f"{base}.features.npy"), Path(f"{base}.foreground.npy"), Path(f"{base}.json")

    def _open(self, key: str, expected: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
        features_path, foreground_path, meta_path = self._paths(key)
        if not meta_path.is_file():
            return None
        try:
            features = np.load(features_path, mmap_mode="r")
            foreground = np.load(foreground_path, mmap_mode="r")
            ok = features.shape == expected and foreground.shape == expected[:2] + expected[3:]
        except (OSError, ValueError) as err:
            ok, reason = False, str(err)
        else:
            reason = f"shape {features.shape} != expected {expected}"
        if not ok:
            warnings.warn(
                f"Feature cache {key} is unreadable or stale ({reason}); rebuilding it.", stacklevel=2
            )
            for path in (meta_path, features_path, foreground_path):
                path.unlink(missing_ok=True)
            return None
        return features, foreground

    @torch.no_grad()
    def _build(
        self,
        key: str,
        extractor: FeatureExtractorLike,
        dataset: MultiViewImageDataset,
        expected: tuple[int, ...],
    ) -> None:
        features_path, foreground_path, meta_path = self._paths(key)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            pin_memory=self.device.type == "cuda",
        )
        # Channels-last: oneDNN (CPU) and cuDNN (GPU) run the backbone's convolutions faster in it.
        extractor = extractor.to(self.device, memory_format=torch.channels_last)
        # the arrays are renamed into place when both are complete, the JSON (what _open looks for) after
        # plain writes, not a memory map: the process's resident set does not grow with the cache
        with (
            atomic_path(features_path) as tmp_features,
            atomic_path(foreground_path) as tmp_foreground,
            npy_rows(tmp_features, np.float16, expected) as write_features,
            npy_rows(tmp_foreground, np.uint8, expected[:2] + expected[3:]) as write_foreground,
        ):
            batches = progress(
                loader, len(loader), f"Extracting features ({len(dataset)} samples)", self.show_progress
            )
            for batch in batches:  # DataLoader workers decode the next images while this batch runs
                images = batch["images"].to(self.device, non_blocking=True)
                b = images.shape[0]
                out = extract_as_cached(extractor, rearrange(images, "b v c h w -> (b v) c h w"))
                # float16 already on the device: half the transfer, and no conversion pass on the CPU side
                out = rearrange(out.to(torch.float16), "(b v) c h w -> b v c h w", b=b)
                write_features(out.cpu().numpy())
                write_foreground(batch["foreground"].numpy())
        meta = {
            "key": key,
            "shape": list(expected),
            **extractor.cache_signature(),
            "keys": [s.key for s in dataset.samples],
        }
        write_atomic(meta_path, json.dumps(meta, indent=1))
        log.info("Cached features for %d samples at %s", len(dataset), features_path)
