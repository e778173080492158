"""The figure of a training run: the validation NLL over the steps and the output gates' magnitudes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from multiflow_pl.evaluation.plots import save_figure


def save_training_curves(
    steps: Sequence[int],
    nll: Sequence[float],
    gates: np.ndarray,
    view_names: Sequence[str],
    path: str | Path,
    smoothed: Sequence[float] | None = None,
    stop: tuple[int, str] | None = None,
    title: str = "",
) -> Path:
    """Save a PNG: the validation NLL per check (and its smoothed value), then one panel per block with
    every view's gate magnitude.

    Args:
        steps: optimizer steps of the checks ``[T]``.
        nll: validation NLL per check ``[T]``.
        gates: ``[T, n_blocks, V]`` gate magnitudes (mean |gamma| of the block's two coupling steps).
        view_names: ``V`` names for the legend.
        smoothed: the stopping rule's smoothed NLL ``[T]``, if one ran.
        stop: ``(step, reason)`` where training stopped, marked on every panel.
    """
    n_blocks = gates.shape[1]
    n_cols = min(n_blocks, 3)
    n_rows = 1 + -(-n_blocks // n_cols)
    figure = Figure(figsize=(3.4 * n_cols, 2.6 * n_rows))
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.07, top=0.9, hspace=0.5, wspace=0.3)
    grid = figure.add_gridspec(n_rows, n_cols)
    ax = figure.add_subplot(grid[0, :])
    ax.plot(steps, nll, marker="o", markersize=3, linewidth=1.2, label="validation NLL")
    if smoothed is not None:
        ax.plot(steps, smoothed, linewidth=1.2, linestyle="--", label="smoothed (stopping rule)")
    ax.set(xlabel="step", ylabel="NLL per channel")
    panels = [ax]
    for block in range(n_blocks):
        axis = figure.add_subplot(grid[1 + block // n_cols, block % n_cols])
        for view, name in enumerate(view_names):
            axis.plot(steps, gates[:, block, view], linewidth=1.0, label=name)
        axis.set_title(f"block {block}: |gamma|", fontsize=8)
        axis.set_xlabel("step", fontsize=7)
        axis.tick_params(labelsize=7)
        panels.append(axis)
    panels[1].legend(fontsize=6)
    if stop is not None:
        for axis in panels:
            axis.axvline(stop[0], color="0.4", linewidth=0.8, linestyle=":")
        ax.plot([], [], color="0.4", linestyle=":", label=f"stop at step {stop[0]} ({stop[1]})")
    ax.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)
