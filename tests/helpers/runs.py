"""Tiny runs for the tests: real configs with tiny overrides, and command lines run as users run them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[2] / "src"


def write_image_file(path: Path, size: int = 8, seed: int = 0) -> Path:
    """Write a tiny random RGB image (format from the suffix: .jpg, .png, ...), creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


TINY_TRAIN = [
    "backbone=resnet18",  # the fast random-init stem; the packaged ImageNet backbone has tests of its own
    "data.generate.categories=[can]",
    "data.generate.n_train=6",
    "data.generate.n_test=6",
    "data.generate.size=64",
    "data.eval_size=64",
    "data.batch_size=2",
    "data.eval_batch_size=3",
    "data.val_fraction=0.2",
    "backbone.input_size=64",
    "model.flow.n_blocks=2",
    "model.flow.hidden=8",
    "model.flow.kernel_sizes=[3,3]",
    "schedule=epochs",  # a fixed 2 epochs (the default; tests/test_schedule.py runs schedule=steps)
    "trainer.max_epochs=2",
    "logger=csv",
    "callbacks.progress_bar=null",
    "callbacks.predictions=null",
    "callbacks.plots=null",
    "++trainer.enable_progress_bar=false",
]
"""A tiny synthetic run (one category, 6 + 6 samples of 64 px, 1 held out for the threshold, 2 epochs)."""


def compose_config(name: str, root: Path, overrides: list[str]):
    """Compose a real config with every path under ``root`` (run directory ``root/run``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from multiflow_pl.config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            name,
            overrides=[f"paths.root_dir={root}", f"hydra.run.dir={root / 'run'}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "run")
        del cfg.hydra
    return cfg


@dataclass(frozen=True)
class TinyRun:
    """A trained tiny run: its folder, run directory, last checkpoint and test metrics."""

    root: Path
    overrides: list[str]
    metrics: dict

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"

    @property
    def data_root(self) -> Path:
        return self.root / "data" / "synthetic"


def run_cli(
    entry: str | None,
    root: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m multiflow_pl.<entry> [overrides]`` as users do, in ``root`` with every path under it
    (run directory ``root/run`` unless ``hydra.run.dir=`` is among the overrides), or ``command`` as given.

    This checkout's sources come first on PYTHONPATH; stdout and stderr are captured (not a terminal).
    """
    if command is None:
        defaults = [f"paths.root_dir={root}"]
        if not any(o.startswith("hydra.run.dir=") for o in overrides):
            defaults.append(f"hydra.run.dir={root / 'run'}")
        command = [sys.executable, "-m", f"multiflow_pl.{entry}", *defaults, *overrides]
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    for name in ("HYDRA_FULL_ERROR", "MULTIFLOW_DEBUG"):
        if name not in (env or {}):
            full_env.pop(name, None)
    return subprocess.run(command, cwd=root, env=full_env, capture_output=True, text=True, timeout=600)
