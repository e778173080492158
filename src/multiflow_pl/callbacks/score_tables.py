"""Score tables of the test set: one row per view image and one per sample, written after testing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from multiflow_pl.evaluation.writers import write_score_tables
from multiflow_pl.utils.distributed import gather_objects


class ScoreTables(Callback):
    """Write ``<run>/view_scores.csv`` (key, view, image path, view and sample label, sample class, image
    score) and ``<run>/sample_scores.csv`` (max and mean over views) after testing; the run folder is
    ``trainer.default_root_dir``. Under DDP rank 0 writes the rows of all ranks."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.records = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        image = outputs.image.detach().double().cpu()
        for i, key in enumerate(batch["key"]):
            for j, path in enumerate(batch["image_paths"][i]):
                self.records.append(
                    {
                        "key": key,
                        "view": j,
                        "image_path": path,
                        "view_label": int(batch["view_labels"][i, j]),
                        "sample_label": int(batch["label"][i]),
                        "sample_class": batch["anomaly_class"][i],
                        "image_score": float(image[i, j]),
                    }
                )

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parts = gather_objects(trainer, self.records)
        if trainer.is_global_zero:
            self.records = [record for part in parts for record in part]
            write_score_tables(Path(trainer.default_root_dir), self.records)
