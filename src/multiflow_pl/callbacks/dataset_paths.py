"""What the test-output callbacks need of a run: the test dataset, and paths as Real-IAD writes them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import Dataset


def test_dataset(trainer: L.Trainer) -> Dataset:
    """The dataset of the (first) test dataloader: it has ``samples`` and ``flip_views``."""
    loaders = trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    return loader.dataset


def category_folder(trainer: L.Trainer) -> Path | None:
    """The folder that the dataset's relative paths start from: ``<root>/realiad_<resolution>/<category>``
    for Real-IAD layouts, the rig folder for own rigs; ``None`` without a MultiViewDataModule."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "format"):
        return None
    root = Path(datamodule.root).expanduser().resolve()
    if datamodule.format == "realiad":
        return root / f"realiad_{datamodule.resolution}" / datamodule.category
    return root


def dataset_path(path: Path | str, folder: Path | None) -> str:
    """``path`` relative to ``folder`` in POSIX form (as in Real-IAD's JSONs), or absolute when outside it."""
    path = Path(path)
    if folder is not None and path.is_relative_to(folder):
        return path.relative_to(folder).as_posix()
    return str(path)
