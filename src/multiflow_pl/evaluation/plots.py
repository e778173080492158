"""Figures of test results: multi-view sample sheets (images, ground-truth outlines, anomaly maps on one
shared colour scale), ROC curves and score histograms of normal vs anomalous.

Built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so it works with any backend and
in worker processes; ``fig.savefig(path)`` renders through Agg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from scipy import ndimage

from multiflow_pl.data.sample import MultiViewSample

MASK_COLOUR = "red"
MAP_COLOURMAP = "inferno"
OUTLINE_RGB = (255, 0, 0)
SHEET_DPI = 100
TILE_GAP = 4  # pixels between the tiles of a sample sheet
LABEL_BAND = 14  # pixels above a sample's tiles for the view names
SAMPLE_GAP = 10  # extra pixels between samples


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


def read_resized(path: str | Path, size: int, is_mask: bool = False, flip: bool = False) -> np.ndarray:
    """An image as uint8 [size,size,3] (bilinear) or a mask as bool [size,size] (nearest), optionally
    flipped horizontally (as the datasets flip configured views)."""
    with Image.open(path) as image:
        image = ImageOps.mirror(image) if flip else image
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
            images=[read_resized(view.image_path, size, is_mask=False) for view in views],
            view_names=[f"{view.view} {view.anomaly_class}" for view in views],
            masks=[
                None if view.mask_path is None else read_resized(view.mask_path, size, True) for view in views
            ],
            title=sample.key,
            axes=row[: len(views)],
        )
        for ax in row[len(views) :]:
            ax.set_axis_off()
    figure.subplots_adjust(left=0.03, right=0.99, top=0.97, bottom=0.01, wspace=0.04, hspace=0.25)
    return save_figure(figure, path)


@dataclass(frozen=True)
class SheetRow:
    """One sample on a sample sheet.

    Attributes:
        title: the label written left of the sample (key, class, score).
        view_names: one name per view.
        images: per view an image [H,W,3] (uint8 or float in [0,1]).
        masks: per view a ground-truth mask [H,W] (bool) or ``None``.
        maps: per view an anomaly map [h,w].
    """

    title: str
    view_names: Sequence[str]
    images: Sequence[np.ndarray]
    masks: Sequence[np.ndarray | None]
    maps: Sequence[np.ndarray]


def map_range(rows: Sequence[SheetRow]) -> tuple[float, float]:
    """(min, max) over all anomaly maps of ``rows``: one colour scale for several sheets."""
    values = [(float(np.min(m)), float(np.max(m))) for row in rows for m in row.maps]
    if not values:
        raise ValueError("map_range needs at least one anomaly map.")
    return min(lo for lo, _ in values), max(hi for _, hi in values)


@dataclass(frozen=True)
class SheetGeometry:
    """Pixel layout of a sample sheet whose tiles are ``tile`` pixels square."""

    tile: int

    @property
    def band(self) -> int:
        """Pitch of tiles, horizontally and vertically."""
        return self.tile + TILE_GAP

    @property
    def sample_height(self) -> int:
        """Pixels per sample: label band, image row, map row, gap."""
        return LABEL_BAND + 2 * self.band + SAMPLE_GAP

    def tile_origin(self, sample: int, view: int, is_map: bool) -> tuple[int, int]:
        """(top, left) pixel of a tile."""
        top = sample * self.sample_height + LABEL_BAND + (self.band if is_map else 0)
        return top, view * self.band


def sample_mosaic(rows: Sequence[SheetRow], norm: Normalize) -> np.ndarray:
    """The tiles of a sample sheet as one image, uint8 [H,W,3] (white gaps; layout :class:`SheetGeometry`
    with the side of the first map): per sample a row of view images with the ground truth outlined in
    red, and a row of anomaly maps coloured on the one scale ``norm``."""
    geometry = SheetGeometry(int(np.shape(rows[0].maps[0])[-1]))
    tile, n_columns = geometry.tile, max(len(row.images) for row in rows)
    mosaic = np.full(
        (len(rows) * geometry.sample_height, n_columns * geometry.band - TILE_GAP, 3), 255, np.uint8
    )
    colourmap = colormaps[MAP_COLOURMAP]
    for number, row in enumerate(rows):
        for view, (image, mask, anomaly_map) in enumerate(zip(row.images, row.masks, row.maps, strict=True)):
            top, left = geometry.tile_origin(number, view, is_map=False)
            mosaic[top : top + tile, left : left + tile] = _outlined(image, mask, tile)
            values = _resized(np.asarray(anomaly_map, dtype=np.float32), tile, Image.Resampling.BILINEAR)
            top, left = geometry.tile_origin(number, view, is_map=True)
            mosaic[top : top + tile, left : left + tile] = colourmap(norm(values), bytes=True)[..., :3]
    return mosaic


def save_sample_sheet(
    rows: Sequence[SheetRow],
    path: str | Path,
    title: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Save a PNG with two rows of tiles per sample: the views' images with the ground truth outlined in
    red, and their anomaly maps (:func:`sample_mosaic`).

    All maps share ONE colour scale, ``vmin``..``vmax`` (default: :func:`map_range` of ``rows``), shown by a
    single colour bar, so brighter means more anomalous across every view and sample of the sheet. The
    sheet is drawn as one image (fast enough to run after every test).
    """
    if not rows:
        raise ValueError("save_sample_sheet needs at least one sample.")
    default_lo, default_hi = map_range(rows)
    norm = Normalize(default_lo if vmin is None else vmin, default_hi if vmax is None else vmax)
    mosaic = sample_mosaic(rows, norm)
    geometry = SheetGeometry(int(np.shape(rows[0].maps[0])[-1]))
    width, height = mosaic.shape[1] / SHEET_DPI, mosaic.shape[0] / SHEET_DPI  # inches
    left, right, top, bottom = 0.5, 1.0, (0.35 if title else 0.1), 0.1  # margins in inches
    fig_w, fig_h = width + left + right, height + top + bottom
    figure = Figure(figsize=(fig_w, fig_h))
    ax = figure.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    font = 7 if geometry.tile < 192 else 9
    for number, row in enumerate(rows):
        for view, name in enumerate(row.view_names):
            y, x = geometry.tile_origin(number, view, is_map=False)
            ax.text(x + geometry.tile / 2, y - 2, name, ha="center", va="bottom", fontsize=font)
        y, _ = geometry.tile_origin(number, 0, is_map=True)
        ax.text(-4, y, row.title, ha="right", va="center", rotation=90, fontsize=font)
    colour_axes = figure.add_axes(
        ((left + width + 0.1) / fig_w, bottom / fig_h, 0.12 / fig_w, height / fig_h)
    )
    figure.colorbar(ScalarMappable(norm, cmap=MAP_COLOURMAP), cax=colour_axes, label="anomaly score (NLL)")
    if title:
        figure.suptitle(title, fontsize=9, y=1 - 0.05 / fig_h, va="top")
    return save_figure(figure, path, dpi=SHEET_DPI)


def _resized(array: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """``array`` [H,W] or [H,W,3] resized to [size,size(,3)] (unchanged when it has that size)."""
    if array.shape[:2] == (size, size):
        return array
    return np.asarray(Image.fromarray(array).resize((size, size), resample))


def _outlined(image: np.ndarray, mask: np.ndarray | None, size: int) -> np.ndarray:
    """An image as uint8 [size,size,3] with the outline of ``mask`` (any size; None: no outline) in red."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    tile = _resized(image, size, Image.Resampling.BILINEAR).copy()
    if mask is not None:
        region = _resized(np.asarray(mask, dtype=np.uint8) * 255, size, Image.Resampling.NEAREST) > 127
        tile[region & ~ndimage.binary_erosion(region, iterations=max(1, size // 128))] = OUTLINE_RGB
    return tile


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points from (0, 0) to (1, 1), one per distinct score (tied scores form one diagonal step).

    Args:
        scores: [N] anomaly scores (higher = more anomalous).
        labels: [N] 0/1 labels, both classes present.

    Returns:
        (false-positive rates [K], true-positive rates [K]).
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be matching 1-D arrays.")
    if labels.all() or not labels.any():
        raise ValueError("roc_curve needs normal and anomalous samples.")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    group_ends = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_positives = np.r_[0, np.cumsum(labels)[group_ends]]
    false_positives = np.r_[0, np.cumsum(~labels)[group_ends]]
    return false_positives / false_positives[-1], true_positives / true_positives[-1]


def save_roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """Save a PNG with one ROC curve per entry ``name -> (scores [N], labels [N])``, AUROC in the legend.

    A set lacking a class is listed in the legend as undefined instead of drawn.
    """
    figure = Figure(figsize=(4.4, 4.2))  # fixed margins: constrained layout costs seconds per figure
    figure.subplots_adjust(left=0.14, right=0.96, bottom=0.12, top=0.92)
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8, linestyle="--")
    for name, (scores, labels) in curves.items():
        labels = np.asarray(labels).astype(bool)
        if labels.all() or not labels.any():
            ax.plot([], [], label=f"{name}: undefined (one class)")
            continue
        fpr, tpr = roc_curve(scores, labels)
        auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        ax.plot(fpr, tpr, linewidth=1.4, label=f"{name}: AUROC {100 * auroc:.1f}")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(figure, path)


def save_score_histograms(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, bins: int = 30, title: str = ""
) -> Path:
    """Save a PNG with one panel per entry ``name -> (scores [N], labels [N])``: histograms of the normal
    and the anomalous scores on shared bins."""
    if not panels:
        raise ValueError("save_score_histograms needs at least one panel.")
    figure = Figure(figsize=(4.0 * len(panels), 3.0))
    figure.subplots_adjust(left=0.6 / (4.0 * len(panels)), right=0.98, bottom=0.16, top=0.8, wspace=0.25)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (scores, labels)) in zip(axes, panels.items(), strict=True):
        scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
        edges = np.histogram_bin_edges(scores, bins=bins)
        for selected, label, colour in ((~labels, "normal", "tab:blue"), (labels, "anomalous", "tab:red")):
            ax.hist(
                scores[selected],
                bins=edges,
                histtype="stepfilled",
                alpha=0.55,
                color=colour,
                label=f"{label} ({selected.sum()})",
            )
        ax.set(xlabel="anomaly score", ylabel="count", title=name)
        ax.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path
