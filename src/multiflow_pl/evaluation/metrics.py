"""Streaming anomaly-detection metrics at image, sample (multi-view) and pixel level.

All curve metrics are computed from per-threshold counts ordered by score: the exact mode counts at every
unique score, the binned mode counts in the bins of an :class:`ExpandingHistogram`, whose memory does not
depend on the number of pixels. Image and sample metrics are always exact (one score per view image).

Usage, once per evaluated category::

    metrics = AnomalyMetrics(mode="binned")
    for batch in loader:  # N = samples x views images per call
        metrics.update(image_scores, image_labels, sample_keys, anomaly_maps, gt_masks, sample_classes)
    results = metrics.compute()  # {"image_auroc": ..., "sample_auroc": ..., "pixel_aupro": ...}

``AnomalyMetrics`` is a ``torchmetrics.Metric``: under DDP, ``compute`` gathers the states of all ranks.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchmetrics import Metric

# ------------------------------------------------------------------------------------------------------
# Curve metrics from per-threshold counts
# ------------------------------------------------------------------------------------------------------


def _undefined(name: str, reason: str) -> float:
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
    _undefined(name, "only one class present")
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
        return _undefined(name, "no ground-truth regions")
    if neg.sum() == 0:
        return _undefined(name, "no normal pixels")
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
        return _undefined(name, "only one class present")
    scores = scores.double()
    low, high = float(scores.min()), float(scores.max())
    if low == high:
        return _undefined(name, "all scores are equal")
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
        return _undefined(name, "all scores are equal")
    thresholds = adeval_thresholds(low, high, n_strips)

    def at_or_above(counts: Tensor, class_high: float) -> Tensor:
        below = torch.cat([counts.new_zeros(1), counts.double().cumsum(0)])
        interpolated = np.interp(thresholds.numpy(), edges.double().numpy(), (below[-1] - below).numpy())
        reached = thresholds <= class_high
        return torch.where(reached, torch.from_numpy(interpolated).clamp(min=1.0), 0.0)

    return _aupr_from_threshold_counts(
        at_or_above(pos, pos_high), at_or_above(neg, neg_high), float(pos.sum())
    )


def _tally_by_unique_score(
    scores: Tensor, positive: Tensor, positive_weights: Tensor | None = None
) -> Tensor:
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


# ------------------------------------------------------------------------------------------------------
# Histogram over an unbounded score range
# ------------------------------------------------------------------------------------------------------


class ExpandingHistogram:
    """Histogram with a fixed number of bins on the global grid {k * 2**exponent : k integer}.

    Bin i of the window holds values in [(start + i) * 2**exponent, (start + i + 1) * 2**exponent). Values
    outside the window move it; when the occupied range no longer fits in ``n_bins`` bins, the exponent
    grows (merging aligned pairs of bins, an exact re-binning). As every histogram lives on the same global
    grid, two histograms merge exactly at the larger of their exponents. The first values set the finest
    exponent that fits them, so the final bin width is below 2 * (value range) / (n_bins - 1).

    Attributes:
        counts: [channels, n_bins] float64 sums of weights per bin.
    """

    _MIN_EXPONENT = -100  # keeps 2**-exponent a normal float
    _MANTISSA_BITS = 40  # bins finer than |value| * 2**-40 resolve nothing a float32 score can hold

    def __init__(self, n_bins: int, channels: int) -> None:
        self.n_bins = n_bins
        self.counts = torch.zeros(channels, n_bins, dtype=torch.float64)
        self.exponent: int | None = None  # None while empty
        self.start = 0

    def add(self, values: Tensor, channel: int, weights: Tensor | None = None) -> None:
        """Add values [M] (weights [M], default 1) to one channel, moving or coarsening the grid as needed."""
        if values.numel() == 0:
            return
        values = values.double()
        if self.is_empty:
            self.exponent = None  # nothing to keep: restart at the finest grid that fits the new values
        self._cover(float(values.min()), float(values.max()))
        local = self._grid_index(values, self.exponent) - self.start
        weights = None if weights is None else weights.double()
        self.counts[channel] += torch.bincount(local, weights=weights, minlength=self.n_bins)

    def merge(self, other: ExpandingHistogram) -> None:
        """Add the counts of ``other`` (same n_bins and channels), re-binned onto a common grid."""
        if other.is_empty:
            return
        if self.is_empty:
            self.exponent, self.start, self.counts = other.exponent, other.start, other.counts.clone()
            return
        exponent = max(self.exponent, other.exponent)
        low_a, high_a = self._occupied(exponent)
        low_b, high_b = other._occupied(exponent)
        exponent, start = self._fit(exponent, min(low_a, low_b), max(high_a, high_b))
        self.counts = self._regridded(exponent, start) + other._regridded(exponent, start)
        self.exponent, self.start = exponent, start

    @property
    def is_empty(self) -> bool:
        return self.exponent is None or not bool(self.counts.any())

    def edges(self) -> Tensor:
        """[n_bins + 1] float64 bin edges of the current window (call only when not empty)."""
        return (self.start + torch.arange(self.n_bins + 1, dtype=torch.float64)) * 2.0**self.exponent

    def to_tensor(self) -> Tensor:
        """The histogram as one float64 tensor [channels * n_bins + 3]: the counts row by row, then
        (occupied 1/0, exponent, start). Exponent and start are integers far below 2**53, exact in float64."""
        grid = [0.0, 0.0, 0.0] if self.is_empty else [1.0, float(self.exponent), float(self.start)]
        return torch.cat([self.counts.flatten(), torch.tensor(grid, dtype=torch.float64)])

    @classmethod
    def from_tensor(cls, state: Tensor, channels: int) -> ExpandingHistogram:
        """The histogram that :meth:`to_tensor` encoded as ``state`` [channels * n_bins + 3] (any device)."""
        state = state.detach().cpu().double()
        n_bins, remainder = divmod(state.numel() - 3, channels)
        if remainder or n_bins < 1:
            raise ValueError(f"histogram state of {state.numel()} values does not hold {channels} channels")
        histogram = cls(n_bins, channels)
        occupied, exponent, start = state[-3:].tolist()
        if occupied:
            histogram.counts = state[:-3].reshape(channels, n_bins).clone()
            histogram.exponent, histogram.start = int(exponent), int(start)
        return histogram

    @staticmethod
    def _grid_index(values: Tensor, exponent: int) -> Tensor:
        """Global bin index floor(value / 2**exponent) (exact: scaling by a power of two does not round)."""
        return torch.floor(values * 2.0**-exponent).long()

    def _initial_exponent(self, low: float, high: float) -> int:
        span_bits = math.frexp(high - low)[1]  # high - low < 2**span_bits
        exponent = span_bits - self.n_bins.bit_length() - 1 if high > low else self._MIN_EXPONENT
        magnitude_bits = math.frexp(max(abs(low), abs(high)))[1]
        return max(exponent, magnitude_bits - self._MANTISSA_BITS, self._MIN_EXPONENT)

    def _fit(self, exponent: int, low_index: int, high_index: int) -> tuple[int, int]:
        """Smallest exponent >= ``exponent`` whose window holds global indices [low, high] (given at
        ``exponent``), and the window start that centres them."""
        while high_index - low_index + 1 > self.n_bins:
            exponent, low_index, high_index = exponent + 1, low_index >> 1, high_index >> 1
        return exponent, low_index - (self.n_bins - (high_index - low_index + 1)) // 2

    def _occupied(self, exponent: int) -> tuple[int, int]:
        """Global indices (at ``exponent`` >= self.exponent) of the lowest and highest non-empty bins."""
        occupied = torch.nonzero(self.counts.any(dim=0)).flatten()
        shift = exponent - self.exponent
        return (self.start + int(occupied[0])) >> shift, (self.start + int(occupied[-1])) >> shift

    def _cover(self, low: float, high: float) -> None:
        """Move/coarsen the window so that it holds [low, high] and all current counts."""
        if self.exponent is None:
            exponent = self._initial_exponent(low, high)
            scale = 2.0**-exponent
            self.exponent, self.start = self._fit(exponent, math.floor(low * scale), math.floor(high * scale))
            return
        scale = 2.0**-self.exponent
        low_index, high_index = math.floor(low * scale), math.floor(high * scale)
        if low_index >= self.start and high_index < self.start + self.n_bins:
            return
        occupied_low, occupied_high = self._occupied(self.exponent)
        exponent, start = self._fit(
            self.exponent, min(low_index, occupied_low), max(high_index, occupied_high)
        )
        self.counts = self._regridded(exponent, start)
        self.exponent, self.start = exponent, start

    def _regridded(self, exponent: int, start: int) -> Tensor:
        """Counts [channels, n_bins] moved onto the window (exponent >= self.exponent, start); every
        non-empty bin must land inside it."""
        global_index = self.start + torch.arange(self.n_bins, dtype=torch.int64)
        local = torch.bitwise_right_shift(global_index, min(exponent - self.exponent, 63)) - start
        occupied = self.counts.any(dim=0)
        if occupied.any() and (local[occupied].min() < 0 or local[occupied].max() >= self.n_bins):
            raise RuntimeError("internal error: re-binned histogram does not fit its window")
        regridded = torch.zeros_like(self.counts)
        regridded.index_add_(1, local[occupied], self.counts[:, occupied])
        return regridded


# ------------------------------------------------------------------------------------------------------
# Input handling
# ------------------------------------------------------------------------------------------------------

CLASS_NAME_BYTES = 64
"""Width of the UTF-8 byte rows that hold sample class names in the metric state (tensors cross DDP)."""

HISTOGRAM_CHANNELS = 3
"""Channels of the binned mode's pixel histogram: normal pixels, anomalous pixels, region mass."""


def _region_sizes(masks: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """masks [N, H, W] bool -> (size of its region for every mask pixel in C order [n_mask_pixels] int64,
    number of regions). Regions are the connected components of each image's mask."""
    labels, n_regions = ndimage.label(masks, structure=structure)
    return np.bincount(labels.ravel())[labels[masks]], n_regions


def _extremes(scores: Tensor, positive: Tensor) -> Tensor:
    """scores [M], positive [M] bool -> [3] float64 (lowest score, highest normal, highest anomalous score),
    +-inf for an empty set."""

    def highest(values: Tensor) -> float:
        return float(values.max()) if values.numel() else -math.inf

    low = float(scores.min()) if scores.numel() else math.inf
    return torch.tensor([low, highest(scores[~positive]), highest(scores[positive])], dtype=torch.float64)


def _reduce_extremes(stacked: Tensor) -> Tensor:
    """The extremes [3] of the union of R sets from theirs, stacked [R, 3] (see :func:`_extremes`)."""
    return torch.cat([stacked[:, :1].amin(dim=0), stacked[:, 1:].amax(dim=0)])


def _reduce_histograms(stacked: Tensor) -> Tensor:
    """R histogram states stacked [R, HISTOGRAM_CHANNELS * n_bins + 3] (:meth:`ExpandingHistogram.to_tensor`)
    -> the state of their exact merge, on the device of ``stacked``."""
    merged = ExpandingHistogram.from_tensor(stacked[0], HISTOGRAM_CHANNELS)
    for state in stacked[1:]:
        merged.merge(ExpandingHistogram.from_tensor(state, HISTOGRAM_CHANNELS))
    return merged.to_tensor().to(stacked.device)


def _class_codes(classes: Sequence[str] | None, n_images: int) -> Tensor:
    """Class names -> [N, CLASS_NAME_BYTES] uint8 rows of their UTF-8 bytes, zero-padded (None: all zero,
    no class)."""
    codes = torch.zeros(n_images, CLASS_NAME_BYTES, dtype=torch.uint8)
    if classes is None:
        return codes
    if isinstance(classes, str) or len(classes) != n_images:
        raise ValueError(f"sample_classes must be a sequence of {n_images} strings (one per image)")
    rows: dict[str, Tensor] = {}
    for i, name in enumerate(classes):
        if not isinstance(name, str):
            raise ValueError("sample_classes must hold strings")
        if name not in rows:
            encoded = name.encode()
            if len(encoded) > CLASS_NAME_BYTES or b"\0" in encoded:
                raise ValueError(
                    f"sample class {name!r} must be at most {CLASS_NAME_BYTES} UTF-8 bytes without NUL"
                )
            rows[name] = torch.tensor(list(encoded.ljust(CLASS_NAME_BYTES, b"\0")), dtype=torch.uint8)
        codes[i] = rows[name]
    return codes


def _class_name(code: Tensor) -> str:
    """A [CLASS_NAME_BYTES] uint8 row of :func:`_class_codes` -> the class name ("" for none)."""
    return bytes(code.tolist()).rstrip(b"\0").decode()


def _concatenated(state: list[Tensor] | Tensor, empty_dtype: torch.dtype) -> Tensor:
    """A list state (or, after a sync, its concatenation) as one CPU tensor; empty [0] when nothing came."""
    if isinstance(state, Tensor):
        return state.cpu()
    return torch.cat(state).cpu() if state else torch.zeros(0, dtype=empty_dtype)


def _key_ids(keys: Sequence[str]) -> Tensor:
    """Sample keys -> [N] int64 ids (64-bit BLAKE2b; collisions are negligible for any dataset size)."""
    digests = (hashlib.blake2b(key.encode(), digest_size=8).digest() for key in keys)
    return torch.tensor([int.from_bytes(d, "little", signed=True) for d in digests], dtype=torch.int64)


def _as_cpu_tensor(value: Tensor | np.ndarray | Sequence) -> Tensor:
    return torch.as_tensor(value).detach().cpu()


def _check_binary(tensor: Tensor, name: str) -> None:
    if tensor.dtype == torch.bool:
        return
    if tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name} must hold 0/1 as bool or integers, got dtype {tensor.dtype}")
    if ((tensor != 0) & (tensor != 1)).any():
        raise ValueError(
            f"{name} must hold 0/1 as bool or integers, got values {tensor.unique().tolist()[:8]}"
        )


def _check_finite(tensor: Tensor, name: str) -> None:
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point scores, got dtype {tensor.dtype}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite scores")


# ------------------------------------------------------------------------------------------------------
# The metric collection
# ------------------------------------------------------------------------------------------------------


class AnomalyMetrics(Metric):
    """Image, sample and pixel anomaly-detection metrics, accumulated batch by batch (a torchmetrics Metric).

    Args:
        mode: ``"binned"`` (pixel metrics from histograms; memory independent of the number of pixels) or
            ``"exact"`` (keeps every pixel score; for small sets and tests).
        n_bins: histogram bins in binned mode.
        pixel_metrics: compute pixel_auroc, pixel_ap and pixel_aupro (then ``update`` needs maps and masks).
        aupro_fpr_limit: FPR up to which the per-region-overlap curve is integrated (then normalised).
        connectivity: 8 or 4, the pixel neighbourhood that joins mask pixels into one ground-truth region.
        kwargs: torchmetrics options (``sync_on_compute``, ``process_group``, ``dist_sync_fn``, ...).

    ``compute()`` keys: image_auroc, image_ap, image_f1max (over all view images); sample_auroc, sample_ap
    (sample score = max over its views' image scores, sample label = max of its views' labels);
    sample_auroc_mean, sample_ap_mean (mean over views); pixel_auroc, pixel_ap, pixel_aupro; and
    image_aupr, sample_aupr, pixel_aupr: the area under the precision-recall curve as Real-IAD's official
    tool ADEval computes it (:func:`adeval_aupr`), which differs from average precision (``*_ap``);
    ``sample_auroc_<CLASS>`` for every class of anomalous samples given to ``update``: the sample AUROC
    (max over views) of that class's samples against all normal samples.
    A metric whose set lacks a class (or, for AUPRO, ground-truth regions) is NaN with a warning.
    Binned pixel curves treat the pixels of a bin as tied: ROC and PRO curves run straight through a bin,
    and AP interleaves a bin's positives and negatives (see ``average_precision_from_counts``).

    Call ``update`` per batch and ``compute`` at the end; calling the metric itself (torchmetrics'
    ``forward``, which would compute every metric per batch) raises a TypeError. Under DDP ``compute``
    gathers the states of all ranks (torchmetrics' ``sync_on_compute``); ``merge_state`` adds another
    instance's states. States (``metric_state``; not persistent, so they stay out of checkpoints) live on
    the metric's device and keep their dtypes through ``.to(dtype)``, ``.half()`` or ``set_dtype``:
    lists concatenated over updates and ranks: image_scores [N] float64, image_labels [N] int64,
    sample_ids [N] int64 (hashed keys), sample_classes [N, CLASS_NAME_BYTES] uint8 (UTF-8, zero-padded);
    n_regions [] int64 (summed); exact mode: pixel_scores [P] float32/64, pixel_region_sizes [P] int32 (0 for
    a normal pixel); binned mode: histogram [3 * n_bins + 3] float64 (negatives, positives and region mass
    of :meth:`ExpandingHistogram.to_tensor`, merged exactly) and pixel_extremes [3] float64 (lowest pixel
    score, highest normal and highest anomalous pixel score; +-inf while none).
    Every rank must have had at least one update before a synchronised ``compute``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        mode: Literal["binned", "exact"] = "binned",
        n_bins: int = 2**16,
        pixel_metrics: bool = True,
        aupro_fpr_limit: float = 0.3,
        connectivity: Literal[4, 8] = 8,
        **kwargs: Any,
    ) -> None:
        if mode not in ("binned", "exact"):
            raise ValueError(f"mode must be 'binned' or 'exact', got {mode!r}")
        if n_bins < 16:
            raise ValueError(f"n_bins must be at least 16, got {n_bins}")
        if not 0.0 < aupro_fpr_limit <= 1.0:
            raise ValueError(f"aupro_fpr_limit must be in (0, 1], got {aupro_fpr_limit}")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        super().__init__(**kwargs)
        self.mode = mode
        self.n_bins = n_bins
        self.pixel_metrics = pixel_metrics
        self.aupro_fpr_limit = aupro_fpr_limit
        self.connectivity = connectivity
        # Regions never connect across the batch axis: only the middle plane of the 3-D structure is set.
        self._structure = np.zeros((3, 3, 3), dtype=bool)
        self._structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        for name in ("image_scores", "image_labels", "sample_ids", "sample_classes"):
            self.add_state(name, [], dist_reduce_fx="cat")
        self.add_state("n_regions", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        if mode == "exact":
            self.add_state("pixel_scores", [], dist_reduce_fx="cat")
            self.add_state("pixel_region_sizes", [], dist_reduce_fx="cat")
        else:
            empty = ExpandingHistogram(n_bins, HISTOGRAM_CHANNELS).to_tensor()
            self.add_state("histogram", empty, dist_reduce_fx=_reduce_histograms)
            no_extremes = torch.tensor([math.inf, -math.inf, -math.inf], dtype=torch.float64)
            self.add_state("pixel_extremes", no_extremes, dist_reduce_fx=_reduce_extremes)

    def forward(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not supported: call ``update`` per batch and ``compute`` once."""
        raise TypeError("AnomalyMetrics is not called per batch: use update(...) per batch, then compute()")

    def update(
        self,
        image_scores: Tensor | np.ndarray,
        image_labels: Tensor | np.ndarray,
        sample_keys: Sequence[str],
        anomaly_maps: Tensor | np.ndarray | None = None,
        gt_masks: Tensor | np.ndarray | None = None,
        sample_classes: Sequence[str] | None = None,
    ) -> None:
        """Add N view images (on any device; the states stay on the metric's device).

        Args:
            image_scores: [N] float image anomaly scores.
            image_labels: [N] 0/1 view labels.
            sample_keys: N sample keys; the views of one sample share a key (also across calls).
            anomaly_maps: [N, H, W] float pixel scores at the evaluation size (required with pixel metrics).
            gt_masks: [N, H, W] bool or 0/1 ground-truth masks (required with pixel metrics).
            sample_classes: N anomaly classes of the views' samples (e.g. "OK", "HS"), at most
                CLASS_NAME_BYTES UTF-8 bytes each; None gives no ``sample_auroc_<CLASS>``.
        """
        scores = _as_cpu_tensor(image_scores)
        labels = _as_cpu_tensor(image_labels)
        if scores.ndim != 1:
            raise ValueError(f"image_scores must have shape [N], got {tuple(scores.shape)}")
        n_images = scores.numel()
        _check_finite(scores, "image_scores")
        if tuple(labels.shape) != (n_images,):
            raise ValueError(
                f"image_labels must have shape [{n_images}] like image_scores, got {tuple(labels.shape)}"
            )
        _check_binary(labels, "image_labels")
        if isinstance(sample_keys, str) or len(sample_keys) != n_images:
            raise ValueError(f"sample_keys must be a sequence of {n_images} strings (one per image)")
        if not all(isinstance(key, str) for key in sample_keys):
            raise ValueError("sample_keys must hold strings")
        class_codes = _class_codes(sample_classes, n_images)
        if self.pixel_metrics:
            maps, masks = self._checked_pixels(anomaly_maps, gt_masks, n_images)
            self._update_pixels(maps, masks.bool())
        self.image_scores.append(scores.to(self.device, torch.float64, copy=True))
        self.image_labels.append(labels.to(self.device, torch.int64, copy=True))
        self.sample_ids.append(_key_ids(sample_keys).to(self.device))
        self.sample_classes.append(class_codes.to(self.device))

    def _checked_pixels(
        self, anomaly_maps: Tensor | np.ndarray | None, gt_masks: Tensor | np.ndarray | None, n_images: int
    ) -> tuple[Tensor, Tensor]:
        if anomaly_maps is None or gt_masks is None:
            raise ValueError("anomaly_maps and gt_masks are required when pixel_metrics=True")
        maps = _as_cpu_tensor(anomaly_maps)
        masks = _as_cpu_tensor(gt_masks)
        if maps.ndim != 3 or maps.shape[0] != n_images:
            raise ValueError(f"anomaly_maps must have shape [N={n_images}, H, W], got {tuple(maps.shape)}")
        if masks.shape != maps.shape:
            raise ValueError(
                f"gt_masks must have the shape of anomaly_maps {tuple(maps.shape)}, got {tuple(masks.shape)}"
            )
        _check_finite(maps, "anomaly_maps")
        _check_binary(masks, "gt_masks")
        return maps, masks

    def _update_pixels(self, maps: Tensor, masks: Tensor) -> None:
        """maps [N, H, W] float, masks [N, H, W] bool, both on the CPU."""
        region_sizes, n_regions = _region_sizes(masks.numpy(), self._structure)
        region_sizes = torch.from_numpy(region_sizes)
        self.n_regions = self.n_regions + n_regions
        scores, positive = maps.reshape(-1), masks.reshape(-1)
        if self.mode == "exact":
            dense_sizes = torch.zeros(scores.numel(), dtype=torch.int32)
            dense_sizes[positive] = region_sizes.int()
            score_dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
            self.pixel_scores.append(scores.to(self.device, score_dtype, copy=True))
            self.pixel_region_sizes.append(dense_sizes.to(self.device))
        else:
            histogram = ExpandingHistogram.from_tensor(self.histogram, HISTOGRAM_CHANNELS)
            positive_scores = scores[positive]
            histogram.add(scores[~positive], channel=0)
            histogram.add(positive_scores, channel=1)
            histogram.add(positive_scores, channel=2, weights=1.0 / region_sizes.double())
            self.histogram = histogram.to_tensor().to(self.device)
            extremes = torch.stack([self.pixel_extremes.cpu(), _extremes(scores, positive)])
            self.pixel_extremes = _reduce_extremes(extremes).to(self.device)

    def compute(self) -> dict[str, float]:
        """All metrics as floats (NaN with a warning where undefined; pixel keys only with pixel metrics)."""
        scores = _concatenated(self.image_scores, torch.float64)
        labels = _concatenated(self.image_labels, torch.int64)
        image_counts = _tally_by_unique_score(scores, labels.bool())
        results = {
            "image_auroc": auroc_from_counts(*image_counts, name="image_auroc"),
            "image_ap": average_precision_from_counts(*image_counts, name="image_ap"),
            "image_f1max": f1_max_from_counts(*image_counts, name="image_f1max"),
        }
        sample_ids = _concatenated(self.sample_ids, torch.int64)
        sample_ids, sample_index = torch.unique(sample_ids, return_inverse=True)
        n_samples, n_images = sample_ids.numel(), scores.numel()
        sample_labels = torch.zeros(n_samples, dtype=torch.int64).scatter_reduce_(
            0, sample_index, labels, "amax", include_self=False
        )
        max_scores = torch.zeros(n_samples, dtype=torch.float64).scatter_reduce_(
            0, sample_index, scores, "amax", include_self=False
        )
        view_counts = torch.bincount(sample_index, minlength=n_samples)
        mean_scores = (
            torch.zeros(n_samples, dtype=torch.float64).index_add_(0, sample_index, scores) / view_counts
        )
        for suffix, sample_scores in (("", max_scores), ("_mean", mean_scores)):
            counts = _tally_by_unique_score(sample_scores, sample_labels.bool())
            results[f"sample_auroc{suffix}"] = auroc_from_counts(*counts, name=f"sample_auroc{suffix}")
            results[f"sample_ap{suffix}"] = average_precision_from_counts(*counts, name=f"sample_ap{suffix}")
        results["image_aupr"] = adeval_aupr(scores, labels.bool(), "image_aupr")
        results["sample_aupr"] = adeval_aupr(max_scores, sample_labels.bool(), "sample_aupr")
        first_views = torch.full((n_samples,), n_images, dtype=torch.int64).scatter_reduce_(
            0, sample_index, torch.arange(n_images), "amin"
        )
        codes = _concatenated(self.sample_classes, torch.uint8).reshape(-1, CLASS_NAME_BYTES)
        results.update(_sample_auroc_by_class(max_scores, sample_labels, codes[first_views]))
        if self.pixel_metrics:
            results.update(self._compute_pixels())
        return results

    def _compute_pixels(self) -> dict[str, float]:
        if self.mode == "exact":
            pixel_scores = _concatenated(self.pixel_scores, torch.float32)
            sizes = _concatenated(self.pixel_region_sizes, torch.int32)
            positive = sizes > 0
            neg, pos, region_mass = _tally_by_unique_score(
                pixel_scores, positive, 1 / sizes[positive].double()
            )
            aupr = adeval_aupr(pixel_scores, positive, "pixel_aupr")
        else:
            histogram = ExpandingHistogram.from_tensor(self.histogram, HISTOGRAM_CHANNELS)
            neg, pos, region_mass = histogram.counts
            if histogram.is_empty:
                aupr = _undefined("pixel_aupr", "no pixels")
            else:
                aupr = adeval_aupr_from_histogram(
                    histogram.edges(), neg, pos, self.pixel_extremes.cpu(), "pixel_aupr"
                )
        n_regions = int(self.n_regions)
        return {
            "pixel_aupr": aupr,
            "pixel_auroc": auroc_from_counts(neg, pos, name="pixel_auroc"),
            "pixel_ap": average_precision_from_counts(
                neg, pos, name="pixel_ap", interleave_ties=self.mode == "binned"
            ),
            "pixel_aupro": aupro_from_counts(
                neg, region_mass, n_regions, self.aupro_fpr_limit, "pixel_aupro"
            ),
        }

    @property
    def _settings(self) -> tuple:
        return self.mode, self.n_bins, self.connectivity, self.pixel_metrics

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add the states of another AnomalyMetrics with the same settings (or its ``metric_state``): the
        result equals one object fed both inputs (binned histograms merge exactly)."""
        if isinstance(incoming_state, AnomalyMetrics) and incoming_state._settings != self._settings:
            raise ValueError(
                "cannot merge AnomalyMetrics with a different mode, n_bins, connectivity or pixel_metrics"
            )
        super().merge_state(incoming_state)

    def _apply(self, fn: Callable[[Tensor], Tensor], exclude_state: Sequence[str] = ()) -> AnomalyMetrics:
        """Move the states with the metric but keep their dtypes: a model cast (``.to(torch.float16)``,
        ``set_dtype``) must not round float64 scores or histogram counts."""
        this = super()._apply(fn, exclude_state=tuple(self._defaults))
        for name, default in this._defaults.items():
            if name in exclude_state:
                continue
            this._defaults[name] = _moved(default, this.device)
            setattr(this, name, _moved(getattr(this, name), this.device))
        return this


def _moved(state: list[Tensor] | Tensor, device: torch.device) -> list[Tensor] | Tensor:
    """A state (tensor or list of tensors) on ``device``, dtypes unchanged."""
    if isinstance(state, Tensor):
        return state.to(device)
    return [tensor.to(device) for tensor in state]


def _sample_auroc_by_class(scores: Tensor, labels: Tensor, codes: Tensor) -> dict[str, float]:
    """``{"sample_auroc_<CLASS>": auroc}`` of every class of anomalous samples against all normal samples,
    in class order; scores [S] float64 sample scores, labels [S] 0/1, codes [S, CLASS_NAME_BYTES] uint8
    classes (rows of :func:`_class_codes`; an all-zero row has no class)."""
    anomalous = labels == 1
    normal_scores = scores[~anomalous]
    classes, class_index = torch.unique(codes[anomalous], dim=0, return_inverse=True)
    results = {}
    for k, code in enumerate(classes):
        name = _class_name(code)
        if not name:
            continue
        class_scores = scores[anomalous][class_index == k]
        key = f"sample_auroc_{name}"
        both = torch.cat([normal_scores, class_scores])
        is_class = torch.cat([torch.zeros_like(normal_scores), torch.ones_like(class_scores)])
        results[key] = exact_auroc(both, is_class, key)
    return dict(sorted(results.items()))


def exact_auroc(scores: Tensor, labels: Tensor, name: str = "auroc") -> float:
    """Exact AUROC of scores [M] against 0/1 labels [M] (NaN with a warning for a one-class set)."""
    counts = _tally_by_unique_score(scores.double(), labels.bool())
    return auroc_from_counts(counts[0], counts[1], name)
