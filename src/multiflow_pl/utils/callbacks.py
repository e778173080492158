"""Lightning callbacks built from the config."""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar


def make_progress_bar(kind: str = "auto", refresh_rate: int = 1) -> Callback:
    """A rich progress bar on a terminal, a plain tqdm bar otherwise (logs, CI, SLURM).

    Args:
        kind: "auto", "rich" or "tqdm".
    """
    if kind not in ("auto", "rich", "tqdm"):
        raise ValueError(f"progress bar kind {kind!r}; expected auto, rich or tqdm")
    use_rich = kind == "rich" or (kind == "auto" and sys.stdout.isatty())
    if use_rich:
        return RichProgressBar(refresh_rate=refresh_rate)
    return TQDMProgressBar(refresh_rate=refresh_rate if sys.stdout.isatty() else 10)
