"""Lightning callbacks that leave the test results behind: Real-IAD prediction pickles, and pictures
(sample sheets, ROC curves, score histograms) in the run directory and in W&B.

Both are fed by what ``test_step`` returns (``maps`` [B,V,M,M], ``image`` [B,V], ``sample_max`` [B]) and
by the batch (``index``, ``key``, ``label``, ``view_labels``, ``masks``); the samples behind a batch come
from the test dataset (``dataset.samples[index]``). Under DDP every rank collects its own share and rank 0
writes the files after gathering.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import Dataset

from multiflow_pl.data.sample import MultiViewSample
from multiflow_pl.evaluation.export import write_realiad_predictions
from multiflow_pl.evaluation.plots import (
    SheetRow,
    map_range,
    read_resized,
    save_roc_curves,
    save_sample_sheet,
    save_score_histograms,
)

log = logging.getLogger(__name__)


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


def gather_to_all(trainer: L.Trainer, payload: Any) -> list[Any]:
    """``payload`` of every rank, in rank order (a collective call under DDP; ``[payload]`` otherwise)."""
    if trainer.world_size == 1:
        return [payload]
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, payload)
    return gathered


class PredictionExport(Callback):
    """Write ``<run>/<dirname>/<category>.pkl`` in Real-IAD's format after testing, so the dataset's own
    evaluation tool (ADEval) runs on it unchanged::

        {image_path: (anomaly_map [S,S] float32, image_score, mask_path or None)}

    Paths are relative to the category folder, exactly as ``image_path``/``mask_path`` in Real-IAD's JSONs
    (e.g. ``NG/HS/S0064/audiojack__0064_NG_HS_C1_20231023092610.jpg``); evaluate with
    ``python -m adeval --add_prefix <root>/realiad_<res>/<category>/ --sample_key_pat '<pattern>' <pkl>``
    (``python -m multiflow_pl.adeval`` with NumPy >= 2.4; see that module).

    While testing, each rank spools its maps into a sparse float32 ``.npy`` memmap [N,V,S,S] (row = sample
    index), so memory stays flat however large the test set is; rank 0 then pickles the maps straight from
    the memmaps and removes them (the run directory must be on a file system all ranks share).
    The file is large (N x V x S^2 x 4 bytes): shrink it with ``map_size`` or drop the callback
    (``callbacks.predictions=null``).

    Args:
        dirname: folder under the run directory (``trainer.default_root_dir``).
        map_size: side S of the exported maps (bilinear, anti-aliased); ``None`` keeps the evaluation size.
    """

    def __init__(self, dirname: str = "predictions", map_size: int | None = None) -> None:
        if map_size is not None and map_size < 1:
            raise ValueError(f"map_size must be a positive side length or None, got {map_size}")
        self.dirname = dirname
        self.map_size = map_size
        self._spool: np.ndarray | None = None
        self._spool_path: Path | None = None
        self._scores: dict[int, list[float]] = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_spool()
        self._scores = {}
        self._spool_path = self._output_dir(trainer) / f".spool-rank{trainer.global_rank}.npy"

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        maps = outputs["maps"].detach().float()
        if self.map_size is not None and maps.shape[-1] != self.map_size:
            b, v, h, w = maps.shape
            maps = F.interpolate(
                maps.reshape(b * v, 1, h, w),
                size=(self.map_size, self.map_size),
                mode="bilinear",
                antialias=True,
            ).reshape(b, v, self.map_size, self.map_size)
        maps = maps.cpu().numpy()
        if self._spool is None:
            self._spool_path.parent.mkdir(parents=True, exist_ok=True)
            shape = (len(test_dataset(trainer)), *maps.shape[1:])
            self._spool = np.lib.format.open_memmap(
                self._spool_path, mode="w+", dtype=np.float32, shape=shape
            )
        scores = outputs["image"].detach().double().cpu()
        for row, index in enumerate(batch["index"].tolist()):
            self._spool[index] = maps[row]
            self._scores[index] = scores[row].tolist()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._spool is not None:
            self._spool.flush()
            self._spool = None
        spool_path = str(self._spool_path) if self._scores else None
        parts = gather_to_all(trainer, (spool_path, self._scores))
        if trainer.is_global_zero and any(scores for _, scores in parts):
            path = self._write(trainer, parts)
            log.info("Real-IAD predictions written to %s", path)
        if trainer.is_global_zero:
            for spool, _ in parts:
                if spool is not None:
                    Path(spool).unlink(missing_ok=True)
        self._scores = {}

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._remove_spool()

    def _write(self, trainer: L.Trainer, parts: list[tuple[str | None, dict[int, list[float]]]]) -> Path:
        samples: list[MultiViewSample] = test_dataset(trainer).samples
        folder = category_folder(trainer)
        image_paths, maps, scores, mask_paths = [], [], [], []
        rows: dict[int, tuple[np.ndarray, list[float]]] = {}
        for spool_path, rank_scores in parts:
            if spool_path is not None:
                spool = np.load(spool_path, mmap_mode="r+")
                rows.update({index: (spool, views) for index, views in rank_scores.items()})
        for index in sorted(rows):
            spool, view_scores = rows[index]
            for view_number, (view, score) in enumerate(zip(samples[index].views, view_scores, strict=True)):
                image_paths.append(dataset_path(view.image_path, folder))
                maps.append(np.asarray(spool[index, view_number]))
                scores.append(score)
                mask_paths.append(None if view.mask_path is None else dataset_path(view.mask_path, folder))
        path = self._output_dir(trainer) / f"{samples[0].category}.pkl"
        return write_realiad_predictions(path, image_paths, maps, scores, mask_paths)

    def _output_dir(self, trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.dirname

    def _remove_spool(self) -> None:
        self._spool = None
        if self._spool_path is not None:
            self._spool_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class SheetCandidate:
    """A sample kept for a sample sheet: its sample score, maps [V,M,M] float32 and masks [V,M,M] bool."""

    score: float
    key: str
    index: int
    maps: np.ndarray
    masks: np.ndarray


SHEET_GROUPS: dict[str, tuple[str, int, bool]] = {
    "top_anomalous": ("top-scoring anomalous samples", 1, True),
    "lowest_normal": ("lowest-scoring normal samples", 0, False),
    "missed_anomalous": ("worst misses: lowest-scoring anomalous samples", 1, False),
    "false_alarms": ("worst misses: highest-scoring normal samples", 0, True),
}
"""name -> (title, sample label, highest scores first) of the sample sheets."""


def keep_extremes(candidates: Sequence[SheetCandidate], count: int, highest: bool) -> list[SheetCandidate]:
    """The ``count`` candidates with the highest (or lowest) scores; ties broken by key (rank-independent)."""
    ordered = sorted(candidates, key=lambda c: (-c.score if highest else c.score, c.key))
    return ordered[:count]


class ResultPlots(Callback):
    """After testing, save pictures to ``<run>/<dirname>/`` and, with a WandbLogger, log them to W&B with
    a results table (the test metrics of the run):

    * ``samples_<group>.png`` for each of :data:`SHEET_GROUPS`: ``n_samples`` samples with all views
      (image with ground-truth outline, anomaly map), every map of every sheet on ONE colour scale;
    * ``roc.png``: ROC curves of the view images, of the samples (max over views, the official protocol)
      and of the samples (mean over views, the paper's code);
    * ``score_histograms.png``: normal vs anomalous scores of view images and samples (max).

    Args:
        dirname: folder under the run directory (``trainer.default_root_dir``).
        n_samples: samples per sheet.
    """

    def __init__(self, dirname: str = "plots", n_samples: int = 2) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        self.dirname = dirname
        self.n_samples = n_samples
        self._records: dict[str, tuple[int, list[int], list[float]]] = {}
        self._candidates: dict[str, list[SheetCandidate]] = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._records = {}
        self._candidates = {group: [] for group in SHEET_GROUPS}

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        image_scores = outputs["image"].detach().double().cpu()
        sample_scores = outputs["sample_max"].detach().double().cpu().tolist()
        labels = batch["label"].tolist()
        for row, key in enumerate(batch["key"]):
            self._records[key] = (labels[row], batch["view_labels"][row].tolist(), image_scores[row].tolist())
        for group, (_, label, highest) in SHEET_GROUPS.items():
            rows = [row for row in range(len(labels)) if labels[row] == label]
            if not rows:
                continue
            new = [
                SheetCandidate(
                    score=sample_scores[row],
                    key=batch["key"][row],
                    index=int(batch["index"][row]),
                    maps=outputs["maps"][row].detach().float().cpu().numpy().copy(),
                    masks=batch["masks"][row, :, 0].bool().cpu().numpy().copy(),
                )
                for row in rows
            ]
            self._candidates[group] = keep_extremes(self._candidates[group] + new, self.n_samples, highest)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parts = gather_to_all(trainer, (self._records, self._candidates))
        self._records, self._candidates = {}, {}
        if not trainer.is_global_zero:
            return
        records = {key: record for rank_records, _ in parts for key, record in rank_records.items()}
        if not records:
            return
        candidates = {
            group: keep_extremes([c for _, rank in parts for c in rank[group]], self.n_samples, highest)
            for group, (_, _, highest) in SHEET_GROUPS.items()
        }
        dataset = test_dataset(trainer)
        category = dataset.samples[0].category
        paths = self._save_figures(records, candidates, dataset, category, Path(trainer.default_root_dir))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                _log_to_wandb(logger, paths, trainer, pl_module, category)

    def _save_figures(
        self,
        records: dict[str, tuple[int, list[int], list[float]]],
        candidates: dict[str, list[SheetCandidate]],
        dataset: Dataset,
        category: str,
        run_dir: Path,
    ) -> dict[str, Path]:
        out = run_dir / self.dirname
        sample_labels = np.array([label for label, _, _ in records.values()])
        view_labels = np.array([v for _, views, _ in records.values() for v in views])
        view_scores = np.array([s for _, _, scores in records.values() for s in scores])
        sample_max = np.array([max(scores) for _, _, scores in records.values()])
        sample_mean = np.array([float(np.mean(scores)) for _, _, scores in records.values()])
        paths = {
            "roc": save_roc_curves(
                {
                    "view images": (view_scores, view_labels),
                    "samples, max over views": (sample_max, sample_labels),
                    "samples, mean over views": (sample_mean, sample_labels),
                },
                out / "roc.png",
                title=f"{category}: ROC",
            ),
            "score_histograms": save_score_histograms(
                {
                    "view images": (view_scores, view_labels),
                    "samples (max over views)": (sample_max, sample_labels),
                },
                out / "score_histograms.png",
                title=f"{category}: anomaly scores",
            ),
        }
        sheets = {group: [sheet_row(c, dataset) for c in kept] for group, kept in candidates.items() if kept}
        if sheets:
            vmin, vmax = map_range([row for rows in sheets.values() for row in rows])
            for group, rows in sheets.items():
                title = f"{category}: {SHEET_GROUPS[group][0]}"
                paths[f"samples_{group}"] = save_sample_sheet(
                    rows, out / f"samples_{group}.png", title, vmin, vmax
                )
        return paths


def sheet_row(candidate: SheetCandidate, dataset: Dataset) -> SheetRow:
    """A sheet row for a kept sample: its view images read from disk at the map size (flipped like the
    dataset flips them), the kept ground truth and maps."""
    sample: MultiViewSample = dataset.samples[candidate.index]
    flips = getattr(dataset, "flip_views", frozenset())
    size = candidate.maps.shape[-1]
    return SheetRow(
        title=f"{sample.key}\n{sample.anomaly_class}, score {candidate.score:.2f}",
        view_names=[f"{view.view} {view.anomaly_class}" for view in sample.views],
        images=[read_resized(view.image_path, size, flip=view.view in flips) for view in sample.views],
        masks=list(candidate.masks),
        maps=list(candidate.maps),
    )


def _log_to_wandb(
    logger: WandbLogger,
    paths: dict[str, Path],
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    category: str,
) -> None:
    """The figures as W&B images and the test metrics as a one-row W&B table."""
    for name, path in sorted(paths.items()):
        logger.log_image(key=f"test/{name}", images=[str(path)])
    metrics = getattr(pl_module, "test_results", None) or {
        key.removeprefix("test/"): float(value)
        for key, value in trainer.callback_metrics.items()
        if key.startswith("test/")
    }
    metrics = dict(sorted(metrics.items()))
    seed = getattr(pl_module, "run_config", {}).get("seed")
    logger.log_table(
        key="test/results", columns=["category", "seed", *metrics], data=[[category, seed, *metrics.values()]]
    )
