"""Experiment loggers: the W&B logger (one run per multirun job, grouped by sweep) and the run config.

W&B is offline unless ``logger.wandb.offline=false``; credentials come from ``wandb login`` or the
``WANDB_API_KEY`` environment variable, never from the config, and :func:`public_config` drops
secret-looking keys from what is logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

SECRET_KEY = re.compile(r"(api_?key|token|secret|password|passwd|credential)", re.IGNORECASE)
REDACTED = "<redacted>"


def hydra_sweep() -> tuple[str, int] | None:
    """(sweep folder name, job number) inside a Hydra multirun job, else ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    config = HydraConfig.get()
    if config.mode != RunMode.MULTIRUN:
        return None
    return Path(config.sweep.dir).name, int(config.job.num)


def make_wandb_logger(
    name: str | None = None, group: str | None = None, offline: bool = True, **kwargs: Any
) -> WandbLogger:
    """Lightning's WandbLogger with one W&B run per call, i.e. per (multirun) job.

    Args:
        name: the run's name; inside a multirun ``-j<job number>`` is appended (names stay unique when a
            sweep varies settings the name does not show).
        group: W&B group; ``None``: inside a multirun the sweep folder's name (all jobs of one sweep in one
            group), otherwise no group.
        offline: write the run under ``save_dir/wandb`` only (``wandb sync`` uploads it later).
        kwargs: passed to :class:`~lightning.pytorch.loggers.WandbLogger` (project, save_dir, ...).

    Hydra's basic launcher runs the jobs of a multirun one after another in one process, and a new
    WandbLogger would attach to the run still open from the previous job; that run is finished first.
    """
    import wandb

    if wandb.run is not None:
        wandb.finish()
    sweep = hydra_sweep()
    if sweep is not None:
        sweep_name, job_number = sweep
        group = group or sweep_name
        name = f"{name}-j{job_number}" if name else None
    logger = WandbLogger(name=name, group=group, offline=offline, **kwargs)
    # Lightning passes anonymous=None, which W&B warns about ("has no effect") on every run.
    logger._wandb_init.pop("anonymous", None)
    return logger


def finish_wandb() -> None:
    """Finish an open W&B run now: its closing lines are then plain text in logs (when W&B finishes at
    interpreter exit they carry colour codes, whatever the output is)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a (nested) config whose secret-looking keys (api_key, token, password, ...) hold
    :data:`REDACTED` instead of their values."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: REDACTED if SECRET_KEY.search(str(k)) else clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        return value

    return clean(config)


class RunConfigLogger(Callback):
    """Log the resolved run config (``pl_module.run_config``, secrets redacted) and, in a Hydra job, its
    command-line overrides as hyperparameters of every attached logger, once per run."""

    def __init__(self) -> None:
        self._logged = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._logged or not trainer.loggers:
            return
        config = public_config(getattr(pl_module, "run_config", None) or {})
        overrides = _hydra_overrides()
        if overrides is not None:
            config["overrides"] = overrides
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
        self._logged = True


def _hydra_overrides() -> list[str] | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    overrides = []
    for override in map(str, HydraConfig.get().overrides.task):
        key = override.split("=", 1)[0]
        overrides.append(f"{key}={REDACTED}" if SECRET_KEY.search(key) else override)
    return overrides
