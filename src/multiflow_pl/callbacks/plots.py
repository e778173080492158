"""Pictures of the test results (sample sheets, ROC curves, score histograms), saved and sent to W&B."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import Dataset

from multiflow_pl.callbacks.dataset_paths import test_dataset
from multiflow_pl.data.sample import MultiViewSample
from multiflow_pl.evaluation.plots import (
    SheetRow,
    map_range,
    read_resized,
    save_roc_curves,
    save_sample_sheet,
    save_score_histograms,
)
from multiflow_pl.utils.distributed import gather_objects


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
        image_scores = outputs.image.detach().double().cpu()
        sample_scores = outputs.sample_max.detach().double().cpu().tolist()
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
                    maps=outputs.maps[row].detach().float().cpu().numpy().copy(),
                    masks=batch["masks"][row, :, 0].bool().cpu().numpy().copy(),
                )
                for row in rows
            ]
            self._candidates[group] = keep_extremes(self._candidates[group] + new, self.n_samples, highest)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parts = gather_objects(trainer, (self._records, self._candidates))
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
