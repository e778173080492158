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
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchmetrics import Metric

from multiflow_pl.evaluation.curves import (
    adeval_aupr,
    adeval_aupr_from_histogram,
    aupro_from_counts,
    auroc_from_counts,
    average_precision_from_counts,
    exact_auroc,
    f1_max_from_counts,
    tally_by_unique_score,
    undefined_metric,
)
from multiflow_pl.evaluation.histogram import ExpandingHistogram

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
        image_counts = tally_by_unique_score(scores, labels.bool())
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
            counts = tally_by_unique_score(sample_scores, sample_labels.bool())
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
            neg, pos, region_mass = tally_by_unique_score(
                pixel_scores, positive, 1 / sizes[positive].double()
            )
            aupr = adeval_aupr(pixel_scores, positive, "pixel_aupr")
        else:
            histogram = ExpandingHistogram.from_tensor(self.histogram, HISTOGRAM_CHANNELS)
            neg, pos, region_mass = histogram.counts
            if histogram.is_empty:
                aupr = undefined_metric("pixel_aupr", "no pixels")
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
