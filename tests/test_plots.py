"""Result pictures: sample sheets on one colour scale, ROC curves, score histograms, sheet selection."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import Normalize
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from multiflow_pl.callbacks.dataset_paths import dataset_path
from multiflow_pl.callbacks.plots import SheetCandidate, keep_extremes
from multiflow_pl.evaluation.plots import (
    MAP_COLOURMAP,
    SheetGeometry,
    SheetRow,
    map_range,
    roc_curve,
    sample_mosaic,
    save_roc_curves,
    save_sample_sheet,
    save_score_histograms,
)


def _rows(n_samples: int, n_views: int = 3, size: int = 8) -> list[SheetRow]:
    rng = np.random.default_rng(0)
    return [
        SheetRow(
            title=f"sample {i}",
            view_names=[f"C{v + 1}" for v in range(n_views)],
            images=[rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n_views)],
            masks=[np.eye(size, dtype=bool) if v == 0 else None for v in range(n_views)],
            maps=[rng.random((size, size)) * (i + 1) * (v + 1) for v in range(n_views)],
        )
        for i in range(n_samples)
    ]


def test_sample_sheet_png_holds_the_mosaic_at_one_pixel_per_map_pixel(tmp_path):
    rows = _rows(2)
    lo, hi = map_range(rows)
    assert lo == min(m.min() for r in rows for m in r.maps)
    assert hi == max(m.max() for r in rows for m in r.maps)
    mosaic = sample_mosaic(rows, Normalize(lo, hi))
    path = save_sample_sheet(rows, tmp_path / "sheet.png", title="t")
    margins = (50 + 100, 35 + 10)  # left + right (colour bar), top (title) + bottom, at 100 dpi
    assert Image.open(path).size == (mosaic.shape[1] + margins[0], mosaic.shape[0] + margins[1])


def test_sample_mosaic_colours_all_samples_on_one_scale_and_outlines_ground_truth():
    size = 16
    mask = np.zeros((size, size), bool)
    mask[4:12, 4:12] = True
    rows = [
        SheetRow(
            title=f"sample {level}",
            view_names=["C1", "C2"],
            images=[np.zeros((size, size, 3), np.uint8)] * 2,
            masks=[mask, None],
            maps=[np.full((size, size), float(level))] * 2,
        )
        for level in (0, 1)
    ]
    lo, hi = map_range(rows)
    mosaic = sample_mosaic(rows, Normalize(lo, hi))
    geometry = SheetGeometry(size)
    assert mosaic.shape == (2 * geometry.sample_height, 2 * geometry.band - 4, 3)

    def tile(sample: int, view: int, is_map: bool) -> np.ndarray:
        top, left = geometry.tile_origin(sample, view, is_map)
        return mosaic[top : top + size, left : left + size]

    colours = colormaps[MAP_COLOURMAP]
    # a per-sample min-max scale would paint both constant maps alike; one scale keeps 0 dark and 1 bright
    assert (tile(0, 1, True) == colours(0.0, bytes=True)[:3]).all()
    assert (tile(1, 1, True) == colours(1.0, bytes=True)[:3]).all()
    outline = (tile(0, 0, False) == (255, 0, 0)).all(axis=2)
    assert outline[4, 4:12].all() and not outline[8, 8] and not outline[0].any()
    assert not (tile(0, 1, False) == (255, 0, 0)).all(axis=2).any()  # no mask, no outline


def test_sample_sheet_needs_samples(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        save_sample_sheet([], tmp_path / "x.png")


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_curve_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes many ties
    fpr, tpr = roc_curve(scores, labels)
    ref_fpr, ref_tpr, _ = sklearn_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    auroc = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert auroc == pytest.approx(roc_auc_score(labels, scores))


def test_roc_curve_of_constant_scores_is_the_diagonal_and_one_class_is_refused():
    fpr, tpr = roc_curve(np.zeros(4), np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(tpr, [0, 1])
    with pytest.raises(ValueError, match="normal and anomalous"):
        roc_curve(np.arange(3.0), np.ones(3))


def test_roc_and_histogram_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(20), np.ones(10)]
    scores = rng.normal(labels, 1.0)
    roc = save_roc_curves(
        {"views": (scores, labels), "one class": (scores, np.ones(30))}, tmp_path / "roc.png", title="roc"
    )
    hist = save_score_histograms(
        {"views": (scores, labels), "samples": (scores[:10], labels[:10])}, tmp_path / "h.png"
    )
    assert Image.open(roc).size[0] > 200
    assert Image.open(hist).size[0] > Image.open(roc).size[0]  # two panels side by side


def test_keep_extremes_keeps_highest_or_lowest_with_key_tie_break():
    def candidate(score: float, key: str) -> SheetCandidate:
        return SheetCandidate(score, key, 0, np.zeros((1, 2, 2)), np.zeros((1, 2, 2), bool))

    pool = [candidate(0.5, "b"), candidate(0.9, "a"), candidate(0.5, "a"), candidate(0.1, "c")]
    assert [c.key for c in keep_extremes(pool, 2, highest=True)] == ["a", "a"]
    assert [(c.score, c.key) for c in keep_extremes(pool, 3, highest=False)] == [
        (0.1, "c"),
        (0.5, "a"),
        (0.5, "b"),
    ]


def test_dataset_paths_are_relative_to_the_category_folder(tmp_path):
    folder = tmp_path / "realiad_256" / "can"
    assert dataset_path(folder / "NG" / "HS" / "S0001" / "x.jpg", folder) == "NG/HS/S0001/x.jpg"
    assert dataset_path(tmp_path / "other.jpg", folder) == str(tmp_path / "other.jpg")
    assert dataset_path(tmp_path / "x.jpg", None) == str(tmp_path / "x.jpg")
