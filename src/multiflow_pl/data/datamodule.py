"""LightningDataModule serving N-view samples from Real-IAD, the synthetic benchmark or an own rig."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from multiflow_pl.data.dataset import CachedFeatureDataset, MultiViewImageDataset, collate_samples
from multiflow_pl.data.errors import DatasetError
from multiflow_pl.data.features import FeatureCache, FeatureExtractorLike
from multiflow_pl.data.foreground import FOREGROUND_MODES
from multiflow_pl.data.images import RESIZE_MODES
from multiflow_pl.data.sample import MultiViewSample

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
        generate: synthetic-benchmark settings (see ``synthetic.generate``); when given, the benchmark is
            rendered under ``root`` if absent, where ``generate["create"]`` allows it: ``"auto"`` (the
            default) only inside ``data_dir`` (the project's data folder) or over an earlier benchmark,
            ``True`` anywhere, ``False`` never. Elsewhere a missing root is an error, so a mistyped
            ``data.root`` never renders a benchmark at a surprising place.
        data_dir: the project's data folder (``paths.data_dir``), where ``create="auto"`` renders.
        flip_views: views flipped horizontally at load time, either a list or a mapping category -> list.
        foreground: "none", "auto" or "folder" (with ``foreground_dir``).
        resize: how images are resized to the backbone's input: "float" (antialiased bilinear on float
            pixels) or "pil" (PIL's bilinear on 8-bit pixels, as the paper's reference; Real-IAD's setting).
        eval_size: side of ground-truth masks and anomaly maps for pixel metrics.
        cache_features: train/test on cached backbone features (otherwise serve images).
        cache: the feature cache; ``feature_extractor`` is needed for caching and image sizes.
        val_fraction: share of the training samples held out for validation (fitting the OK/NG
            threshold); 0 trains on all of them and fits no threshold.
        val_from_test: share of the labelled test samples moved to validation (F1-optimal threshold);
            they are then left out of the test split.

    Held-out samples are picked per label by a hash of their key, so the split is deterministic and a
    sample keeps its side when others are added.
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
        data_dir: str | Path | None = None,
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
        feature_extractor: FeatureExtractorLike | None = None,
        val_fraction: float = 0.0,
        val_from_test: float = 0.0,
        resize: str = "float",
    ) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"data.resize={resize!r}; expected one of {RESIZE_MODES}")
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
        self.create = self.generate.pop("create", "auto") if self.generate else False
        if self.create not in ("auto", True, False):
            raise DatasetError(f"data.generate.create={self.create!r}; expected auto, true or false.")
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.flip_views = flips_for(flip_views, category)
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
        for name, fraction in (("val_fraction", val_fraction), ("val_from_test", val_from_test)):
            if not 0.0 <= fraction < 1.0:
                raise ValueError(f"data.{name}={fraction}; expected a fraction in [0, 1).")
        self.val_fraction = val_fraction
        self.val_from_test = val_from_test
        self.resize = resize
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

    @property
    def has_validation(self) -> bool:
        """Whether samples are held out for validation (and hence for fitting the threshold)."""
        return self.val_fraction > 0 or self.val_from_test > 0

    def split_samples(self, split: str) -> list[MultiViewSample]:
        """The samples of "train" or "test" minus those held out, or the held-out "val" samples."""
        fractions = {"train": self.val_fraction, "test": self.val_from_test}
        if split == "val":
            return [
                sample
                for source, fraction in fractions.items()
                if fraction > 0
                for sample in held_out(self.index(source), fraction)
            ]
        samples = self.index(split)
        held = {sample.key for sample in held_out(samples, fractions[split])}
        return [sample for sample in samples if sample.key not in held]

    def prepare_data(self) -> None:
        """Render the synthetic benchmark where configured and allowed (see ``generate``), then check that
        the root exists, so a wrong ``data.root`` fails before anything else (backbone weights) is loaded."""
        if self.generate is not None and self.may_generate():
            from multiflow_pl.data.synthetic import generate

            generate(self.root, **self.generate)
        if not self.root.is_dir():
            raise DatasetError(f"Dataset root {self.root} (data.root) does not exist. {self._root_hint()}")

    def may_generate(self) -> bool:
        """Whether the synthetic benchmark may be rendered under ``root`` (see ``generate``)."""
        if self.create != "auto":
            return bool(self.create)
        from multiflow_pl.data.synthetic import META_FILE

        inside = self.data_dir is not None and self.root.resolve().is_relative_to(self.data_dir.resolve())
        return inside or (self.root / META_FILE).is_file()

    def _root_hint(self) -> str:
        """What to do about a missing root, by data format."""
        if self.generate is not None:
            return (
                f"The synthetic benchmark is rendered only inside the data folder {self.data_dir} "
                "(paths.data_dir); fix data.root, or pass data.generate.create=true to render it there."
            )
        if self.format == "folder":
            return "Fix data.root: it must hold train/good/<sample>/<view>.<ext> (see data/folder.py)."
        return (
            "Download Real-IAD (it cannot be fetched automatically) and point data.root, or the REALIAD_ROOT "
            "environment variable, at the folder holding realiad_<resolution>/ and realiad_jsons/."
        )

    def setup(self, stage: str | None = None) -> None:
        stages = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}
        splits = stages.get(stage or "", ["train", "val", "test"])
        for split in splits:
            if split == "val" and not self.has_validation:
                continue
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def build_dataset(self, split: str) -> Dataset:
        """Image or cached-feature dataset of a split."""
        if self.feature_extractor is None:
            raise RuntimeError(
                "MultiViewDataModule needs feature_extractor (the model's backbone) to set up."
            )
        samples = self.split_samples(split)
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
            resize=self.resize,
        )
        log.info(
            "%s split of %s: %d samples x %d views", split, self.category, len(samples), len(samples[0].views)
        )
        if not self.cache_features:
            return images
        if self.cache is None:
            raise RuntimeError("data.cache_features=true needs a FeatureCache (data.cache)")
        with torch.random.fork_rng(devices=[]):  # a run trains the same whether the cache existed or not
            features, foreground = self.cache.load_or_build(self.feature_extractor, images)
        return CachedFeatureDataset(samples, features, foreground, mask_size, self.flip_views)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        """Held-out samples, or none (an empty list makes Lightning skip validation)."""
        if not self.has_validation:
            return []
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        """Training and validation data as Lightning shards them under DDP; test data in order and, under
        DDP, split over the ranks without repeats, so every sample counts once in the gathered metrics."""
        dataset = self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=_unrepeated_sampler(dataset) if split == "test" else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_samples,
            persistent_workers=self.num_workers > 0,
        )


def held_out(samples: Sequence[MultiViewSample], fraction: float) -> list[MultiViewSample]:
    """A deterministic ``fraction`` of ``samples`` per label: those whose key hashes lowest.

    At least one sample of each label is taken and at least one is left behind.
    """
    if fraction <= 0:
        return []
    chosen: list[MultiViewSample] = []
    for label in sorted({sample.label for sample in samples}):
        group = sorted(
            (sample for sample in samples if sample.label == label),
            key=lambda sample: hashlib.sha256(sample.key.encode()).hexdigest(),
        )
        count = max(1, round(fraction * len(group)))
        if count >= len(group):
            raise ValueError(
                f"Holding out {fraction:.0%} of {len(group)} samples with label {label} leaves none of them; "
                "lower data.val_fraction / data.val_from_test or add samples."
            )
        chosen.extend(group[:count])
    return chosen


def flips_for(flip_views: Sequence[str] | Mapping[str, Sequence[str]] | None, category: str) -> list[str]:
    """The views of ``category`` to flip, from ``data.flip_views`` (a list, or a mapping category -> list)."""
    if not flip_views:
        return []
    if isinstance(flip_views, Mapping):
        return list(flip_views.get(category, []))
    return list(flip_views)


class UnrepeatedDistributedSampler(DistributedSampler):
    """Rank r of W gets samples r, r + W, r + 2W, ...: each sample exactly once over all ranks, in order.

    Unlike :class:`DistributedSampler` it does not pad ranks to equal length by repeating samples (repeats
    would be counted twice by the metrics); Lightning leaves a DistributedSampler it finds in place.
    """

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


def _unrepeated_sampler(dataset: Dataset) -> UnrepeatedDistributedSampler | None:
    """The sampler for test data under an initialised multi-process group, else None (sequential)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_world_size() > 1:
        return UnrepeatedDistributedSampler(dataset)
    return None
