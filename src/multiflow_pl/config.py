"""Where the Hydra configs live: conf/ in a checkout, multiflow_pl/conf inside an installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The directory holding train.yaml (packaged copy first, then the checkout's conf/)."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"multiflow_pl configs not found next to {PACKAGE_DIR}; reinstall the package.")
