"""LightningDataModule serving N-view samples from Real-IAD, the synthetic benchmark or an own rig."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from multiflow_pl.data.dataset import CachedFeatureDataset, MultiViewImageDataset, collate_samples
from multiflow_pl.data.features import FeatureCache
from multiflow_pl.data.foreground import FOREGROUND_MODES
from multiflow_pl.data.sample import MultiViewSample
from multiflow_pl.models.backbone import FeatureExtractor

log = logging.getLogger(__name__)
DATA_FORMATS = ("realiad", "folder")


class MultiViewDataModule(L.LightningDataModule):
    """Training on normal samples, testing on all, for one category.

    Args:
        root: dataset root (Real-IAD root with ``realiad_<res>/`` and JSONs, or an own-rig folder).
        category: category to train/test (Real-IAD/synthetic); own-rig: the name used in outputs.
        format: "realiad" (Real-IAD and the synthetic benchmark) or "folder" (own rigs).
        json_dir, resolution, drop_incomplete: Real-IAD reader options (see ``realiad.load_samples``).
        views: own-rig view names in order (None: natural sort of the file stems found).
        generate: synthetic-benchmark settings; when given, the benchmark is generated under ``root``
            if absent.
        flip_views: views flipped horizontally at load time, either a list or a mapping category -> list.
        foreground: "none", "auto" or "folder" (with ``foreground_dir``).
        eval_size: side of ground-truth masks and anomaly maps for pixel metrics.
        cache_features: train/test on cached backbone features (otherwise serve images).
        cache: the feature cache; ``feature_extractor`` is needed for caching and image sizes.
    """

    def __init__(
        self,
        root: str | Path,
        category: str,
        format: str = "realiad",
        json_dir: str = "realiad_jsons",
        resolution: str | int = "256",
        drop_incomplete: bool = False,
        views: Sequence[str] | None = None,
        generate: Mapping | None = None,
        flip_views: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        foreground: str = "none",
        foreground_dir: str | None = None,
        eval_size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_features: bool = True,
        cache: FeatureCache | None = None,
        feature_extractor: FeatureExtractor | None = None,
    ) -> None:
        super().__init__()
        if format not in DATA_FORMATS:
            raise ValueError(f"data.format={format!r}; expected one of {DATA_FORMATS}")
        if foreground not in FOREGROUND_MODES:
            raise ValueError(f"data.foreground={foreground!r}; expected one of {FOREGROUND_MODES}")
        self.root = Path(root).expanduser()
        self.category = category
        self.format = format
        self.json_dir = json_dir
        self.resolution = str(resolution)
        self.drop_incomplete = drop_incomplete
        self.views = list(views) if views else None
        self.generate = dict(generate) if generate else None
        self.flip_views = _flips_for(flip_views, category)
        self.foreground = foreground
        self.foreground_dir = foreground_dir
        self.eval_size = eval_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache_features = cache_features
        self.cache = cache
        self.feature_extractor = feature_extractor
        self.datasets: dict[str, Dataset] = {}

    def index(self, split: str) -> list[MultiViewSample]:
        """The samples of a split ("train" or "test")."""
        if self.format == "folder":
            from multiflow_pl.data.folder import load_folder_samples

            return load_folder_samples(
                self.root, split, self.views, category=self.category, drop_incomplete=self.drop_incomplete
            )
        from multiflow_pl.data.realiad import load_samples

        return load_samples(
            self.root,
            self.category,
            split,
            self.json_dir,
            self.resolution,
            drop_incomplete=self.drop_incomplete,
        )

    def prepare_data(self) -> None:
        """Generate the synthetic benchmark when configured and absent (rank 0 only)."""
        if self.generate is not None:
            from multiflow_pl.data.synthetic import generate

            generate(self.root, **self.generate)

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ["train"], "test": ["test"], "predict": ["test"]}.get(stage or "", ["train", "test"])
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def build_dataset(self, split: str) -> Dataset:
        """Image or cached-feature dataset of a split."""
        if self.feature_extractor is None:
            raise RuntimeError(
                "MultiViewDataModule needs feature_extractor (the model's backbone) to set up."
            )
        samples = self.index(split)
        if not samples:
            raise ValueError(f"No {split} samples for category {self.category!r} under {self.root}")
        mask_size = self.eval_size if split == "test" else 0
        images = MultiViewImageDataset(
            samples,
            image_size=self.feature_extractor.input_size,
            mask_size=mask_size,
            feature_size=self.feature_extractor.feature_size,
            flip_views=self.flip_views,
            foreground=self.foreground,
            foreground_dir=self.foreground_dir,
        )
        log.info(
            "%s split of %s: %d samples x %d views", split, self.category, len(samples), len(samples[0].views)
        )
        if not self.cache_features:
            return images
        if self.cache is None:
            raise RuntimeError("data.cache_features=true needs a FeatureCache (data.cache)")
        features, foreground = self.cache.load_or_build(self.feature_extractor, images)
        return CachedFeatureDataset(samples, features, foreground, mask_size, self.flip_views)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_samples,
            persistent_workers=self.num_workers > 0,
        )


def _flips_for(flip_views: Sequence[str] | Mapping[str, Sequence[str]] | None, category: str) -> list[str]:
    if not flip_views:
        return []
    if isinstance(flip_views, Mapping):
        return list(flip_views.get(category, []))
    return list(flip_views)
