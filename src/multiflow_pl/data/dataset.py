"""Torch datasets serving multi-view samples: raw images, or features from the on-disk cache.

Every item is a dict:
    images      [V,3,S,S] float in [0,1]      (image datasets only)
    features    [V,C,h,w] float               (cached-feature datasets only)
    foreground  [V,h,w]   float in {0,1}      (ones when foreground masking is off)
    masks       [V,1,M,M] float in {0,1}      ground truth at the evaluation size M
    view_labels [V] long, label [] long, index [] long, key str, anomaly_class str (the sample's defect code),
    image_paths list[str] (V)

An image dataset built with ``unreadable="flag"`` (predict, inference) does not stop at a sample whose
images cannot be read: its item holds the labels and ``unreadable``, the :class:`InputFlag` of each such view,
instead of images, and :func:`readable_batches` keeps it out of the stacked batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from multiflow_pl.data.errors import UnreadableImageError, require_choice
from multiflow_pl.data.foreground import auto_foreground, folder_foreground
from multiflow_pl.data.images import read_mask, read_views
from multiflow_pl.data.memmap import read_row
from multiflow_pl.data.sample import MultiViewSample
from multiflow_pl.data.view_profile import InputFlag

UNREADABLE_MODES = ("raise", "flag")


class MultiViewImageDataset(Dataset):
    """Images of N-view samples, resized for the backbone, with optional per-view horizontal flips.

    Args:
        samples: the index.
        image_size: backbone input side S.
        mask_size: evaluation side M of ground-truth masks.
        feature_size: (h, w) of the backbone features, for foreground masks; None (with ``foreground="none"``
            only): the items hold no ``foreground``, for callers that make no use of it.
        flip_views: view names flipped horizontally (image, mask and foreground alike), never on disk.
        foreground: "none", "auto" or "folder".
        foreground_dir: the folder of foreground masks for ``foreground="folder"``.
        unreadable: ``"raise"``: an image that cannot be read stops with an :class:`UnreadableImageError`
            naming the file; ``"flag"``: the sample's item is flagged instead (see the module docstring).
        resize: how images of another size are resized to S (:data:`~multiflow_pl.data.images.RESIZE_MODES`).
    """

    def __init__(
        self,
        samples: Sequence[MultiViewSample],
        image_size: int,
        mask_size: int,
        feature_size: tuple[int, int] | None,
        flip_views: Sequence[str] = (),
        foreground: str = "none",
        foreground_dir: str | Path | None = None,
        unreadable: str = "raise",
        resize: str = "float",
    ) -> None:
        require_choice("unreadable", unreadable, UNREADABLE_MODES)
        if feature_size is None and foreground != "none":
            raise ValueError(f"foreground={foreground!r} needs the feature_size of its masks")
        self.samples = list(samples)
        self.image_size = image_size
        self.mask_size = mask_size
        self.feature_size = None if feature_size is None else tuple(feature_size)
        self.flip_views = frozenset(flip_views)
        self.foreground = foreground
        self.foreground_dir = Path(foreground_dir) if foreground_dir else None
        self.unreadable = unreadable
        self.resize = resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        flips = [view.view in self.flip_views for view in sample.views]
        failures: dict[int, UnreadableImageError] | None = {} if self.unreadable == "flag" else None
        images = read_views(
            [v.image_path for v in sample.views], self.image_size, flips, self.resize, failures
        )
        if failures:
            item = _labels_and_masks(sample, index, 0, flips)
            item["unreadable"] = [
                InputFlag(sample.views[i].view, err.kind, f"({err.reason})") for i, err in failures.items()
            ]
            return item
        item = _labels_and_masks(sample, index, self.mask_size, flips)
        item["images"] = images
        if self.feature_size is not None:
            item["foreground"] = self._foreground(sample, images, flips)
        return item

    def _foreground(self, sample: MultiViewSample, images: torch.Tensor, flips: list[bool]) -> torch.Tensor:
        if self.foreground == "auto":
            return auto_foreground(images, self.feature_size)
        if self.foreground == "folder":
            if self.foreground_dir is None:
                raise ValueError("data.foreground=folder needs data.foreground_dir")
            paths = [v.image_path for v in sample.views]
            return folder_foreground(paths, self.foreground_dir, self.feature_size, flips)
        return torch.ones(len(sample.views), *self.feature_size)


class CachedFeatureDataset(Dataset):
    """Backbone features read from the memory-mapped cache; images are never decoded.

    Args:
        samples: the index, in cache order.
        features: memory-mapped array [N,V,C,h,w] (float16).
        foreground: memory-mapped array [N,V,h,w] (uint8).
        mask_size: evaluation side of ground-truth masks, or 0 to skip reading them (training).
        flip_views: as for the image dataset (applies to the masks read here).
    """

    def __init__(
        self,
        samples: Sequence[MultiViewSample],
        features: np.ndarray,
        foreground: np.ndarray,
        mask_size: int = 0,
        flip_views: Sequence[str] = (),
    ) -> None:
        if len(samples) != len(features):
            raise ValueError(f"{len(samples)} samples but {len(features)} cached feature rows")
        self.samples = list(samples)
        self.features = features
        self.foreground_masks = foreground
        self.mask_size = mask_size
        self.flip_views = frozenset(flip_views)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        flips = [view.view in self.flip_views for view in sample.views]
        item = _labels_and_masks(sample, index, self.mask_size, flips)
        item["features"] = torch.from_numpy(read_row(self.features, index))
        # Masks are tiny (several rows share a page): releasing their pages would only re-fault neighbours.
        item["foreground"] = torch.from_numpy(np.array(self.foreground_masks[index], dtype=np.float32))
        return item


def _labels_and_masks(sample: MultiViewSample, index: int, mask_size: int, flips: list[bool]) -> dict:
    item: dict = {
        "view_labels": torch.tensor([v.label for v in sample.views], dtype=torch.long),
        "label": torch.tensor(sample.label, dtype=torch.long),
        "index": torch.tensor(index, dtype=torch.long),
        "key": sample.key,
        "anomaly_class": sample.anomaly_class,
        "image_paths": [str(v.image_path) for v in sample.views],
    }
    if mask_size:
        item["masks"] = torch.stack(
            [
                read_mask(v.mask_path, mask_size, v.image_path if v.mask_path else None, flip)
                for v, flip in zip(sample.views, flips, strict=True)
            ]
        )
    return item


def collate_samples(items: list[dict]) -> dict:
    """Stack tensors along a new batch axis; keep strings and path lists as Python lists."""
    batch: dict = {}
    for name in items[0]:
        values = [item[name] for item in items]
        batch[name] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def readable_batches(items: Iterable[dict], batch_size: int) -> Iterator[dict]:
    """Batches of ``batch_size`` readable samples from items one at a time (of an image dataset with
    ``unreadable="flag"``): :func:`collate_samples` of their items, and under ``"unreadable"`` the items of
    the unreadable samples met since the previous batch.

    The readable samples are batched as they would be without the unreadable ones, so that their scores
    do not depend on them. The last batch may hold nothing but ``"unreadable"``.
    """
    readable: list[dict] = []
    unreadable: list[dict] = []
    for item in items:
        (unreadable if "unreadable" in item else readable).append(item)
        if len(readable) == batch_size:
            yield {**collate_samples(readable), "unreadable": unreadable}
            readable, unreadable = [], []
    if readable or unreadable:
        yield {**(collate_samples(readable) if readable else {}), "unreadable": unreadable}
