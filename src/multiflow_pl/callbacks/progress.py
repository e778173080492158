"""Progress display of Lightning runs: a rich or tqdm bar on a terminal, one log line per epoch otherwise."""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar

from multiflow_pl.utils.progress import is_interactive

log = logging.getLogger(__name__)

PROGRESS_KINDS = ("auto", "rich", "tqdm", "log")


def make_progress_bar(kind: str = "auto", refresh_rate: int = 1) -> Callback:
    """Lightning's progress display.

    Args:
        kind: "rich" (a rich bar), "tqdm" (a tqdm bar), "log" (:class:`LogLineProgress`: one log line per
            epoch, nothing redrawn) or "auto": rich on a terminal, log lines otherwise (logs, CI, SLURM).
        refresh_rate: batches between redraws of the rich and tqdm bars.
    """
    if kind not in PROGRESS_KINDS:
        raise ValueError(f"progress bar kind {kind!r}; expected one of {', '.join(PROGRESS_KINDS)}")
    if kind == "auto":
        kind = "rich" if is_interactive() else "log"
    if kind == "rich":
        return RichProgressBar(refresh_rate=refresh_rate)
    if kind == "tqdm":
        return TQDMProgressBar(refresh_rate=refresh_rate)
    return LogLineProgress()


class LogLineProgress(ProgressBar):
    """Progress for output that is not a terminal: one log line per training epoch (its number, the
    epoch-level progress-bar metrics such as the mean loss, and its duration) and one per test run, instead of
    a bar redrawn with carriage returns. As Lightning's bars, it is silent on ranks other than 0."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled:
            return
        metrics = {
            k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num" and "_step" not in k
        }
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        epochs = "" if trainer.max_epochs in (None, -1) else f"/{trainer.max_epochs}"
        log.info(
            "Epoch %d%s: %d batches, %s (%.1fs)",
            trainer.current_epoch + 1,
            epochs,
            self.total_train_batches,
            shown,
            time.perf_counter() - self._started,
        )

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled:
            batches = sum(trainer.num_test_batches)
            log.info("Tested %d batches (%.1fs)", batches, time.perf_counter() - self._started)
