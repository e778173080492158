"""Real-IAD prediction pickles for the dataset's official evaluation tool, written after testing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from multiflow_pl.callbacks.dataset_paths import category_folder, dataset_path, test_dataset
from multiflow_pl.data.sample import MultiViewSample
from multiflow_pl.evaluation.writers import write_realiad_predictions
from multiflow_pl.utils.distributed import gather_objects

log = logging.getLogger(__name__)


class PredictionWriter(Callback):
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
        maps = outputs.maps.detach().float()
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
        scores = outputs.image.detach().double().cpu()
        for row, index in enumerate(batch["index"].tolist()):
            self._spool[index] = maps[row]
            self._scores[index] = scores[row].tolist()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._spool is not None:
            self._spool.flush()
            self._spool = None
        spool_path = str(self._spool_path) if self._scores else None
        parts = gather_objects(trainer, (spool_path, self._scores))
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
