"""What happened in training: the validation NLL and the output gates over the steps."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from multiflow_pl.callbacks.early_stopping import ValidationNLLStopping
from multiflow_pl.evaluation.training_curves import save_training_curves

log = logging.getLogger(__name__)


def gate_magnitudes(gammas: np.ndarray) -> np.ndarray:
    """Output gates ``[n_blocks, 2, V]`` (block, coupling step a/b, view) -> ``[n_blocks, V]``, the mean
    |gamma| of each block's two coupling steps per view."""
    return np.abs(gammas).mean(axis=1)


class TrainingCurves(Callback):
    """At every validation check, log the gates' magnitudes per block and view (``gate/block<b>/<view>``:
    mean |gamma| of the block's two coupling steps) beside the module's ``val/nll``, and a line with both;
    after training, save ``<run>/<dirname>/training_curves.png`` (validation NLL, the stopping rule's
    smoothed NLL and stop, one panel of gates per block), also to W&B when the wandb logger is on.

    The gates start at 0 (every coupling the identity); how far they open says how much the subnetworks,
    messages included, take part.

    Args:
        dirname: folder under the run directory (``trainer.default_root_dir``).
    """

    def __init__(self, dirname: str = "plots") -> None:
        self.dirname = dirname
        self.steps: list[int] = []
        self.nll: list[float] = []
        self.gates: list[list[list[float]]] = []  # per check [n_blocks, V]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or pl_module.val_nll.update_count == 0:
            return
        gates = gate_magnitudes(pl_module.model.flow.gammas().float().cpu().numpy())
        views = _view_names(pl_module, gates.shape[1])
        pl_module.log_dict(
            {
                f"gate/block{block}/{view}": float(gates[block, v])
                for block in range(gates.shape[0])
                for v, view in enumerate(views)
            },
            rank_zero_only=True,
        )
        self.steps.append(trainer.global_step)
        self.nll.append(float(pl_module.val_nll.compute()))
        self.gates.append(gates.tolist())
        if trainer.is_global_zero:
            log.info(
                "step %d: validation NLL %.4f; output gates |gamma| per block (mean over views): %s",
                self.steps[-1],
                self.nll[-1],
                ", ".join(f"{value:.3f}" for value in gates.mean(axis=1)),
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.steps:
            return
        gates = np.asarray(self.gates)
        views = _view_names(pl_module, gates.shape[2])
        stopping = next((c for c in trainer.callbacks if isinstance(c, ValidationNLLStopping)), None)
        checks = {check.step: check for check in stopping.checks} if stopping is not None else {}
        smoothed = [checks[s].smoothed for s in self.steps] if all(s in checks for s in self.steps) else None
        last = checks.get(self.steps[-1])
        path = save_training_curves(
            self.steps,
            self.nll,
            gates,
            views,
            Path(trainer.default_root_dir) / self.dirname / "training_curves.png",
            smoothed=smoothed,
            stop=(last.step, last.stop) if last is not None and last.stop else None,
            title=f"training: validation NLL and output gates ({trainer.global_step} steps)",
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="train/curves", images=[str(path)])

    def state_dict(self) -> dict:
        return {"steps": self.steps, "nll": self.nll, "gates": self.gates}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps, self.nll, self.gates = state_dict["steps"], state_dict["nll"], state_dict["gates"]


def _view_names(pl_module: L.LightningModule, n_views: int) -> list[str]:
    """The training views' names from the run config (``C1``...), or ``view0``... when it has none."""
    names = getattr(pl_module, "run_config", {}).get("view_names")
    return list(names) if names and len(names) == n_views else [f"view{v}" for v in range(n_views)]
