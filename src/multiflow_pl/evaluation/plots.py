"""Figures of multi-view samples: images with ground-truth outlines and anomaly maps on one shared scale.

Built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so it works with any backend and
in worker processes; ``fig.savefig(path)`` renders through Agg.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from multiflow_pl.data.sample import MultiViewSample

MASK_COLOUR = "red"
MAP_COLOURMAP = "inferno"


def plot_sample_sheet(
    images: Sequence[np.ndarray],
    view_names: Sequence[str],
    masks: Sequence[np.ndarray | None] | None = None,
    maps: Sequence[np.ndarray] | None = None,
    title: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    axes: np.ndarray | Sequence[Axes] | None = None,
) -> Figure:
    """Draw all views of one sample side by side.

    Args:
        images: one image per view, [H,W,3] or [H,W] (uint8, or float in [0,1]).
        view_names: column titles, e.g. ``("C1", ..., "C5")``.
        masks: per view a ground-truth mask [H,W] (bool or 0/255) drawn as a red outline, or ``None``.
        maps: per view an anomaly map [h,w]; drawn in a second row with ONE colour scale for all views
            (``vmin``/``vmax``, by default the min and max over all maps together) and a colour bar.
        title: label of the sample, written left of the first image.
        axes: where to draw: one row of V axes (two rows, [2,V], with ``maps``); default a new figure.

    Returns:
        The figure drawn into.
    """
    n_views, n_rows = len(images), 1 if maps is None else 2
    for name, items in (("view_names", view_names), ("masks", masks), ("maps", maps)):
        if items is not None and len(items) != n_views:
            raise ValueError(f"{name} has {len(items)} entries for {n_views} images; give one per view.")
    if axes is None:
        width = 2.0 * n_views + (0.6 if maps is not None else 0.0)
        figure = Figure(figsize=(width, 2.1 * n_rows), layout="constrained")
        axes = figure.subplots(n_rows, n_views, squeeze=False)
    axes = np.asarray(axes, dtype=object).reshape(n_rows, n_views)
    figure = axes[0, 0].figure
    for column, (image, name) in enumerate(zip(images, view_names, strict=True)):
        ax = axes[0, column]
        ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None)
        mask = None if masks is None else masks[column]
        if mask is not None and np.any(mask):
            ax.contour(np.asarray(mask) > 0, levels=[0.5], colors=MASK_COLOUR, linewidths=0.8)
        ax.set_title(name, fontsize=8)
    if title:
        axes[0, 0].text(
            -0.06,
            0.5,
            title,
            transform=axes[0, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=7,
        )
    if maps is not None:
        lo = float(min(np.min(m) for m in maps)) if vmin is None else vmin
        hi = float(max(np.max(m) for m in maps)) if vmax is None else vmax
        for column, anomaly_map in enumerate(maps):
            shown = axes[1, column].imshow(anomaly_map, cmap=MAP_COLOURMAP, vmin=lo, vmax=hi)
        figure.colorbar(shown, ax=list(axes[1]), fraction=0.03, pad=0.01)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return figure


def _read_resized(path: Path, size: int, is_mask: bool) -> np.ndarray:
    """An image as uint8 [size,size,3] (bilinear) or a mask as bool [size,size] (nearest)."""
    with Image.open(path) as image:
        if is_mask:
            return np.asarray(image.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def save_contact_sheet(samples: Sequence[MultiViewSample], path: str | Path, size: int = 128) -> Path:
    """Save one PNG with a row per sample (all its views, ground-truth outlines, key and class).

    Images are read from disk and resized to ``size`` x ``size`` pixels.
    """
    if not samples:
        raise ValueError("save_contact_sheet needs at least one sample.")
    n_columns = max(len(sample.views) for sample in samples)
    cell = size / 100.0  # inches at 100 dpi
    figure = Figure(figsize=(n_columns * cell + 0.4, len(samples) * (cell + 0.25)))
    grid = figure.subplots(len(samples), n_columns, squeeze=False)
    for row, sample in zip(grid, samples, strict=True):
        views = sample.views
        plot_sample_sheet(
            images=[_read_resized(view.image_path, size, is_mask=False) for view in views],
            view_names=[f"{view.view} {view.anomaly_class}" for view in views],
            masks=[
                None if view.mask_path is None else _read_resized(view.mask_path, size, True)
                for view in views
            ],
            title=sample.key,
            axes=row[: len(views)],
        )
        for ax in row[len(views) :]:
            ax.set_axis_off()
    figure.subplots_adjust(left=0.03, right=0.99, top=0.97, bottom=0.01, wspace=0.04, hspace=0.25)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
