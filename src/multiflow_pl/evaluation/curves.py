"""Curve metrics (AUROC, AP, F1-max, AUPRO, ADEval's AUPR) from per-threshold counts of normal and
anomalous scores: the counts come from every unique score (exact) or from histogram bins (streaming)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

# ------------------------------------------------------------------------------------------------------
# Curve metrics from per-threshold counts
# ------------------------------------------------------------------------------------------------------


def undefined_metric(name: str, reason: str) -> float:
    warnings.warn(f"{name} is undefined ({reason}); returning NaN", RuntimeWarning, stacklevel=3)
    return math.nan


def _counts_from_top(counts: Tensor) -> Tensor:
    """[C, K] counts per threshold in ascending score order -> [C, K+1] counts scoring at or above each
    threshold, highest threshold first, after a leading zero column (threshold +inf)."""
    from_top = counts.double().flip(-1).cumsum(-1)
    return torch.cat([from_top.new_zeros(counts.shape[0], 1), from_top], dim=-1)


def _trapezoid_up_to(x: Tensor, y: Tensor, x_limit: float) -> float:
    """Area under the curve y(x) for x in [x[0], x_limit]; x [K] non-decreasing, y [K].

    The curve is cut at exactly ``x_limit`` by linear interpolation between its neighbouring points.
    """
    n_inside = int(torch.searchsorted(x, torch.tensor([x_limit], dtype=x.dtype), right=True))
    xs, ys = x[:n_inside], y[:n_inside]
    if n_inside < x.numel() and xs[-1] < x_limit:
        x0, x1, y0, y1 = x[n_inside - 1], x[n_inside], y[n_inside - 1], y[n_inside]
        y_limit = y0 + (y1 - y0) * (x_limit - x0) / (x1 - x0)
        xs = torch.cat([xs, xs.new_tensor([x_limit])])
        ys = torch.cat([ys, y_limit.reshape(1)])
    return float(torch.trapezoid(ys, xs))


def _has_both_classes(neg: Tensor, pos: Tensor, name: str) -> bool:
    if neg.sum() > 0 and pos.sum() > 0:
        return True
    undefined_metric(name, "only one class present")
    return False


def auroc_from_counts(neg: Tensor, pos: Tensor, name: str = "auroc") -> float:
    """Area under the ROC curve; neg, pos [K] counts per threshold in ascending score order.

    Ties (one threshold holding both classes) give a diagonal ROC segment, so constant scores give 0.5.
    NaN with a warning naming ``name`` when a class is missing.
    """
    if not _has_both_classes(neg, pos, name):
        return math.nan
    fp, tp = _counts_from_top(torch.stack([neg, pos]))
    return float(torch.trapezoid(tp / tp[-1], fp / fp[-1]))


def _harmonic_segment(x: Tensor, n_terms: Tensor) -> Tensor:
    """sum_{k=1}^{n_terms} 1 / (x + k) for x >= 0, elementwise (float64)."""
    exact = torch.digamma(x + n_terms + 1) - torch.digamma(x + 1)
    # for large x the digamma difference cancels; the midpoint rule is then accurate to ~1 / (12 x^2)
    midpoint = torch.log1p(n_terms / (x + 0.5))
    return torch.where(x > 1e4, midpoint, exact)


def average_precision_from_counts(
    neg: Tensor, pos: Tensor, name: str = "ap", interleave_ties: bool = False
) -> float:
    """Average precision sum over positives of the precision at their rank, divided by their number;
    neg, pos [K] counts per threshold in ascending score order. NaN with a warning when a class is missing.

    By default, as scikit-learn, the samples tied at a threshold all get the precision reached after the
    whole tie group: sum_k (R_k - R_{k-1}) P_k. With ``interleave_ties`` the counts are histogram bins whose
    samples are taken in random order: the k-th of a bin's p positives sits at its expected rank
    k (p + n + 1) / (p + 1) among the bin's p + n samples and sees precision
    (tp0 + k) / (n0 + k (p + n + 1) / (p + 1)), with tp0, n0 the true and all positives above the bin.
    This is exact for bins holding one sample or only positives, and its error shrinks about
    quadratically with the bin width (the default's linearly).
    """
    if not _has_both_classes(neg, pos, name):
        return math.nan
    fp, tp = _counts_from_top(torch.stack([neg, pos]))
    tp_gain, fp_gain = tp.diff(), fp.diff()
    if interleave_ties:
        n_before, n_per_positive = tp[:-1] + fp[:-1], (tp_gain + fp_gain + 1) / (tp_gain + 1)
        # sum over k = 1..p of (tp0 + k) / (n0 + k c) = p / c + (tp0 c - n0) / c^2 * sum 1 / (n0 / c + k)
        harmonic = _harmonic_segment(n_before / n_per_positive, tp_gain)
        tie_term = (tp[:-1] * n_per_positive - n_before) / n_per_positive**2 * harmonic
        precision = (tp_gain / n_per_positive + tie_term) / tp_gain  # mean over the bin's positives
    else:
        precision = tp[1:] / (tp[1:] + fp[1:])
    # thresholds without positives add no recall (and may have undefined precision): leave them out
    return float(torch.where(tp_gain > 0, tp_gain / tp[-1] * precision, 0.0).sum())


def f1_max_from_counts(neg: Tensor, pos: Tensor, name: str = "f1max") -> float:
    """Maximum over thresholds of F1 = 2TP / (2TP + FP + FN); neg, pos [K] counts in ascending score order.
    NaN with a warning when a class is missing."""
    if not _has_both_classes(neg, pos, name):
        return math.nan
    fp, tp = _counts_from_top(torch.stack([neg, pos]))
    return float((2 * tp / (tp + fp + tp[-1])).max())


def aupro_from_counts(
    neg: Tensor, region_mass: Tensor, n_regions: int, fpr_limit: float = 0.3, name: str = "aupro"
) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by ``fpr_limit``.

    Args:
        neg: [K] normal-pixel counts per threshold, ascending score order (gives FPR).
        region_mass: [K] sum over ground-truth regions r of (r's pixels at this threshold) / |r|.
        n_regions: number of ground-truth regions R; PRO(t) = (region mass at or above t) / R.
        fpr_limit: upper FPR integration limit; the curve is interpolated at exactly this FPR.
    """
    if n_regions == 0:
        return undefined_metric(name, "no ground-truth regions")
    if neg.sum() == 0:
        return undefined_metric(name, "no normal pixels")
    fp, mass = _counts_from_top(torch.stack([neg.double(), region_mass.double()]))
    return _trapezoid_up_to(fp / fp[-1], mass / n_regions, fpr_limit) / fpr_limit


# ------------------------------------------------------------------------------------------------------
# The official tool's area under the precision-recall curve (ADEval)
# ------------------------------------------------------------------------------------------------------

ADEVAL_STRIPS = 1000
"""Score strips of ADEval's curves (its ``--nstrips`` default)."""


def adeval_thresholds(low: float, high: float, n_strips: int = ADEVAL_STRIPS) -> Tensor:
    """ADEval's ``n_strips + 1`` evenly spaced thresholds from ``low`` to ``high``, in float32 as it rounds
    them, returned as float64 [n_strips + 1] (ascending)."""
    grid = np.linspace(0.0, 1.0, num=n_strips + 1, endpoint=True, dtype=np.float32) * (high - low) + low
    return torch.from_numpy(grid.astype(np.float64))


def _aupr_from_threshold_counts(tp: Tensor, fp: Tensor, n_positive: float) -> float:
    """ADEval's curve integral: tp, fp [T] counts at or above ascending thresholds -> trapezoids of
    precision over recall, with precision 1 where nothing scores at or above the threshold."""
    predicted = tp + fp
    precision = torch.where(predicted > 0, tp / predicted, 1.0)
    return float(torch.trapezoid(precision.flip(0), (tp / n_positive).flip(0)))


def adeval_aupr(scores: Tensor, positive: Tensor, name: str = "aupr", n_strips: int = ADEVAL_STRIPS) -> float:
    """Area under the precision-recall curve as Real-IAD's official tool (ADEval) computes it; scores [M],
    positive [M] bool.

    Unlike average precision (the step sum over every distinct score), ADEval samples the curve at the
    ``n_strips + 1`` thresholds of :func:`adeval_thresholds` between the lowest and the highest score, joins
    the points by straight lines (trapezoids) and starts at the recall of the highest threshold rather than
    at recall 0. It is therefore lower than AP when the top-scoring samples are anomalous, by about their
    share of the anomalous set (for 12 anomalous samples, up to ~1/12). NaN with a warning when a class is
    missing or all scores are equal (ADEval stops there).
    """
    positive = positive.bool()
    if not positive.any() or positive.all():
        return undefined_metric(name, "only one class present")
    scores = scores.double()
    low, high = float(scores.min()), float(scores.max())
    if low == high:
        return undefined_metric(name, "all scores are equal")
    thresholds = adeval_thresholds(low, high, n_strips)

    def at_or_above(values: Tensor) -> Tensor:
        ordered = values.sort().values
        return (values.numel() - torch.searchsorted(ordered, thresholds, side="left")).double()

    return _aupr_from_threshold_counts(
        at_or_above(scores[positive]), at_or_above(scores[~positive]), int(positive.sum())
    )


def adeval_aupr_from_histogram(
    edges: Tensor,
    neg: Tensor,
    pos: Tensor,
    extremes: Tensor,
    name: str = "aupr",
    n_strips: int = ADEVAL_STRIPS,
) -> float:
    """:func:`adeval_aupr` from histogram counts: edges [K+1] ascending, neg, pos [K] per bin, and the exact
    extremes [3] = (lowest score, highest normal score, highest anomalous score), which place ADEval's
    thresholds. Counts at a threshold inside a bin are interpolated linearly (its samples spread evenly over
    it), except that at least one sample of a class scores at or above any threshold up to that class's
    highest score and none above it: the curve then starts where ADEval's does. NaN with a warning when a
    class is missing or all scores are equal."""
    if not _has_both_classes(neg, pos, name):
        return math.nan
    low, neg_high, pos_high = extremes.double().tolist()
    high = max(neg_high, pos_high)
    if low == high:
        return undefined_metric(name, "all scores are equal")
    thresholds = adeval_thresholds(low, high, n_strips)

    def at_or_above(counts: Tensor, class_high: float) -> Tensor:
        below = torch.cat([counts.new_zeros(1), counts.double().cumsum(0)])
        interpolated = np.interp(thresholds.numpy(), edges.double().numpy(), (below[-1] - below).numpy())
        reached = thresholds <= class_high
        return torch.where(reached, torch.from_numpy(interpolated).clamp(min=1.0), 0.0)

    return _aupr_from_threshold_counts(
        at_or_above(pos, pos_high), at_or_above(neg, neg_high), float(pos.sum())
    )


def tally_by_unique_score(scores: Tensor, positive: Tensor, positive_weights: Tensor | None = None) -> Tensor:
    """Exact per-threshold counts: scores [M], positive [M] bool, positive_weights [n_positive] or None ->
    [2 or 3, K] float64 rows (negatives, positives[, summed weights of positives]) at the K unique scores
    in ascending order."""
    unique_scores, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    n_unique = unique_scores.numel()
    total = torch.bincount(inverse, minlength=n_unique)
    positive_inverse = inverse[positive]
    pos = torch.bincount(positive_inverse, minlength=n_unique)
    rows = [(total - pos).double(), pos.double()]
    if positive_weights is not None:
        rows.append(torch.bincount(positive_inverse, weights=positive_weights.double(), minlength=n_unique))
    return torch.stack(rows)


def exact_auroc(scores: Tensor, labels: Tensor, name: str = "auroc") -> float:
    """Exact AUROC of scores [M] against 0/1 labels [M] (NaN with a warning for a one-class set)."""
    counts = tally_by_unique_score(scores.double(), labels.bool())
    return auroc_from_counts(counts[0], counts[1], name)
