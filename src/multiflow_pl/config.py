"""Where the Hydra configs live, and the ``${multiflow.home:}`` resolver that anchors every run path.

Importing this module registers the resolver, so every entry point (they all import :func:`config_dir`)
and every test that composes the configs has it.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
HOME_VARIABLE = "MULTIFLOW_HOME"


def config_dir() -> Path:
    """The directory holding train.yaml (packaged copy first, then the checkout's conf/)."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"multiflow_pl configs not found next to {PACKAGE_DIR}; reinstall the package.")


def multiflow_home() -> str:
    """The folder that data, caches and logs live under: ``$MULTIFLOW_HOME`` when set, else the folder the
    command was launched from (Hydra's ``runtime.cwd`` inside a job, the current folder before one exists,
    e.g. while a multirun's sweeper names its folder)."""
    home = os.environ.get(HOME_VARIABLE)
    if home:
        return str(Path(home).expanduser().resolve())
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        cwd = OmegaConf.select(HydraConfig.get(), "runtime.cwd", default=None)
        if cwd:
            return str(cwd)
    return os.getcwd()


OmegaConf.register_new_resolver("multiflow.home", multiflow_home, replace=True)
