"""Tests of the streaming anomaly metrics against scikit-learn and direct per-threshold references."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from multiflow_pl.evaluation.curves import adeval_aupr
from multiflow_pl.evaluation.histogram import ExpandingHistogram
from multiflow_pl.evaluation.metrics import CLASS_NAME_BYTES, AnomalyMetrics

PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_aupr")
AUPR_KEYS = ("image_aupr", "sample_aupr", "pixel_aupr")
STRUCTURES = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}


def blob_data(
    seed: int, n_samples: int = 8, n_views: int = 5, size: int = 48, outliers: bool = False
) -> dict:
    """Realistic-looking views: smooth noise maps, blob masks on some views of anomalous samples, scores
    shifted up inside the blobs. Returns maps [N,H,W] float32, masks [N,H,W] bool, scores [N], labels [N],
    keys (N strings), with N = n_samples * n_views in shuffled order."""
    rng = np.random.default_rng(seed)
    n_images = n_samples * n_views
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n_images, size, size), dtype=bool)
    for image in range(n_images):
        if image // n_views % 2 == 1 and rng.random() < 0.7:  # odd samples are anomalous on some views
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(4, size - 4, 2)
                ry, rx = rng.uniform(1.5, size / 6, 2)
                masks[image] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=masks.shape), (0, 2, 2)) * 4
    shift = ndimage.gaussian_filter(masks.astype(float), (0, 1.5, 1.5)) * rng.uniform(
        0.5, 3, (n_images, 1, 1)
    )
    maps = (noise + shift + rng.normal(0, 0.1, masks.shape)).astype(np.float32)
    if outliers:  # a few very hot pixels stretch the score range by two orders of magnitude
        maps.reshape(-1)[rng.integers(0, maps.size, 5)] = rng.uniform(100, 300, 5)
    order = rng.permutation(n_images)
    return {
        "maps": maps[order],
        "masks": masks[order],
        "scores": maps.max(axis=(1, 2))[order],
        "labels": masks.any(axis=(1, 2)).astype(np.int64)[order],
        "keys": [f"sample_{i // n_views:04d}" for i in order],
    }


def with_classes(data: dict) -> dict:
    """``data`` plus "classes": each view's sample class, "OK" for a sample without anomalous views and
    one of three defect classes (by sample number) otherwise."""
    anomalous = {key for key, label in zip(data["keys"], data["labels"], strict=True) if label}
    defects = ("HS", "XV", "AK")
    classes = [defects[int(key[-4:]) % 3] if key in anomalous else "OK" for key in data["keys"]]
    return {**data, "classes": classes}


def feed(metrics: AnomalyMetrics, data: dict, splits: tuple[int, ...] = (7, 13, 20)) -> None:
    """Feed ``data`` in update calls split at ``splits`` (the views of a sample land in different calls);
    with its sample classes where ``data`` has them."""
    bounds = [0, *[s for s in splits if s < len(data["keys"])], len(data["keys"])]
    classes = data.get("classes")
    for start, stop in itertools.pairwise(bounds):
        metrics.update(
            torch.from_numpy(data["scores"][start:stop]),
            torch.from_numpy(data["labels"][start:stop]),
            data["keys"][start:stop],
            torch.from_numpy(data["maps"][start:stop]),
            torch.from_numpy(data["masks"][start:stop]),
            None if classes is None else classes[start:stop],
        )


def direct_aupro(maps: np.ndarray, masks: np.ndarray, connectivity: int = 8, fpr_limit: float = 0.3) -> float:
    """Per-threshold loop over all unique scores: mean region overlap vs FPR, trapezoid up to the limit."""
    regions = []
    for image, mask in enumerate(masks):
        labels, n_regions = ndimage.label(mask, structure=STRUCTURES[connectivity])
        regions += [(image, labels == k) for k in range(1, n_regions + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        above = maps >= threshold
        fprs.append(above[normal].mean())
        pros.append(np.mean([above[image][region].mean() for image, region in regions]))
    area = 0.0
    for k in range(1, len(fprs)):
        if fprs[k] <= fpr_limit:
            area += (fprs[k] - fprs[k - 1]) * (pros[k] + pros[k - 1]) / 2
            continue
        if fprs[k - 1] < fpr_limit:
            pro_at_limit = pros[k - 1] + (pros[k] - pros[k - 1]) * (fpr_limit - fprs[k - 1]) / (
                fprs[k] - fprs[k - 1]
            )
            area += (fpr_limit - fprs[k - 1]) * (pro_at_limit + pros[k - 1]) / 2
        break
    return area / fpr_limit


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        return float(np.nanmax(2 * precision * recall / (precision + recall)))


def sample_reference(data: dict) -> dict[str, float]:
    """Group views by key in plain Python: sample score max / mean over views, label max."""
    grouped: dict[str, list[tuple[float, int]]] = {}
    for key, score, label in zip(data["keys"], data["scores"], data["labels"], strict=True):
        grouped.setdefault(key, []).append((float(score), int(label)))
    labels = np.array([max(label for _, label in views) for views in grouped.values()])
    max_scores = np.array([max(score for score, _ in views) for views in grouped.values()])
    mean_scores = np.array([np.mean([score for score, _ in views]) for views in grouped.values()])
    return {
        "sample_auroc": roc_auc_score(labels, max_scores),
        "sample_ap": average_precision_score(labels, max_scores),
        "sample_auroc_mean": roc_auc_score(labels, mean_scores),
        "sample_ap_mean": average_precision_score(labels, mean_scores),
    }


@pytest.fixture
def adeval_curves(monkeypatch: pytest.MonkeyPatch):
    """ADEval's own curve functions (``adeval.mem_effic``), the reference for the ``*_aupr`` metrics. ADEval
    1.1 calls ``numpy.trapz``, which NumPy 2.4 removed: it gets ``numpy.trapezoid`` under that name."""
    if not hasattr(np, "trapz"):
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    from adeval import mem_effic

    return mem_effic


def warned_names(fn) -> tuple[object, set[str]]:
    """Run fn(); return its result and the metric names mentioned by RuntimeWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, {str(w.message).split(" ")[0] for w in caught if issubclass(w.category, RuntimeWarning)}


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_image_and_sample_metrics_match_sklearn_and_adeval(mode: str, adeval_curves) -> None:
    data = blob_data(seed=0, n_samples=12)
    data["scores"] = np.round(data["scores"], 1)  # ties between images and between views of a sample
    metrics = AnomalyMetrics(mode=mode, pixel_metrics=False)
    feed(metrics, data)
    results = metrics.compute()
    assert not any(key.startswith("pixel") for key in results)
    expected = {
        "image_auroc": roc_auc_score(data["labels"], data["scores"]),
        "image_ap": average_precision_score(data["labels"], data["scores"]),
        "image_f1max": f1_max(data["labels"], data["scores"]),
        "image_aupr": adeval_curves.auroc_and_aupr(data["scores"], data["labels"])[1],
        **sample_reference(data),
    }
    grouped: dict[str, tuple[float, int]] = {}
    for key, score, label in zip(data["keys"], data["scores"], data["labels"], strict=True):
        best_score, best_label = grouped.get(key, (-math.inf, 0))
        grouped[key] = (max(best_score, float(score)), max(best_label, int(label)))
    sample_scores, sample_labels = map(np.array, zip(*grouped.values(), strict=True))
    expected["sample_aupr"] = adeval_curves.auroc_and_aupr(sample_scores, sample_labels)[1]
    assert results == pytest.approx(expected, abs=1e-12)
    assert results["image_aupr"] != pytest.approx(results["image_ap"], abs=1e-3)
    assert results["sample_auroc"] != pytest.approx(results["sample_auroc_mean"], abs=1e-6)


def test_sample_label_is_max_over_views_and_key_grouping_spans_calls() -> None:
    metrics = AnomalyMetrics(mode="exact", pixel_metrics=False)
    # "a": defect seen only by its 2nd view (0.9); "b": normal, one high view; "c": normal; "d": defect
    scores = torch.tensor([0.1, 0.8, 0.9, 0.2, 0.3, 0.85, 0.05], dtype=torch.float64)
    metrics.update(scores[:2], torch.tensor([0, 0]), ["a", "b"])
    metrics.update(scores[2:5], torch.tensor([1, 0, 0]), ["a", "b", "c"])
    metrics.update(scores[5:], torch.tensor([1, 0]), ["d", "c"])
    results = metrics.compute()
    # max scores: a .9 (1), b .8 (0), c .3 (0), d .85 (1) -> both anomalies ranked above both normals
    assert results["sample_auroc"] == pytest.approx(1.0)
    # mean scores: a .5 (1), b .5 (0), c .175 (0), d .85 (1) -> a ties with b
    assert results["sample_auroc_mean"] == pytest.approx(roc_auc_score([1, 0, 0, 1], [0.5, 0.5, 0.175, 0.85]))
    assert results["image_auroc"] == pytest.approx(
        roc_auc_score([0, 0, 1, 0, 0, 1, 0], [0.1, 0.8, 0.9, 0.2, 0.3, 0.85, 0.05])
    )


def test_exact_pixel_metrics_match_sklearn_and_direct_aupro() -> None:
    data = blob_data(seed=1, n_samples=4, size=24)
    data["maps"] = np.round(data["maps"], 1)  # many ties
    metrics = AnomalyMetrics(mode="exact")
    feed(metrics, data)
    results = metrics.compute()
    assert results["pixel_auroc"] == pytest.approx(roc_auc_score(data["masks"].ravel(), data["maps"].ravel()))
    assert results["pixel_ap"] == pytest.approx(
        average_precision_score(data["masks"].ravel(), data["maps"].ravel()), abs=1e-12
    )
    assert results["pixel_aupro"] == pytest.approx(direct_aupro(data["maps"], data["masks"]), abs=1e-9)


@pytest.mark.filterwarnings("ignore:(image|sample)_.* is undefined")  # all views anomalous
@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_pixel_metrics_match_adevals_own_functions(mode: str, adeval_curves) -> None:
    data = blob_data(seed=6, n_samples=4, size=32)
    metrics = AnomalyMetrics(mode=mode)
    feed(metrics, data)
    results = metrics.compute()
    masks = data["masks"].astype(np.uint8) * 255
    auroc, aupr, aupro = adeval_curves.auroc_aupr_aupro(list(data["maps"]), list(masks))
    # ADEval bins its curves into 1000 strips: its AUROC and AUPRO are approximations of ours, while
    # pixel_aupr follows its procedure (exactly from exact scores, to the bins' precision in binned mode)
    assert results["pixel_aupr"] == pytest.approx(aupr, abs=1e-12 if mode == "exact" else 1e-5)
    assert results["pixel_auroc"] == pytest.approx(auroc, abs=1e-3)
    assert results["pixel_aupro"] == pytest.approx(aupro, abs=1e-3)
    assert results["pixel_aupr"] != pytest.approx(results["pixel_ap"], abs=1e-3)


def test_adeval_aupr_starts_at_the_recall_of_the_top_score() -> None:
    # A perfect ranking of n anomalous samples: AP 1, but ADEval's curve begins at recall 1/n.
    for n in (1, 2, 4):
        labels = torch.tensor([0] * 5 + [1] * n)
        scores = torch.arange(len(labels), dtype=torch.float64)
        assert adeval_aupr(scores, labels.bool()) == pytest.approx(1 - 1 / n)


@pytest.mark.filterwarnings("ignore:(image|sample)_.* is undefined")  # all views anomalous
def test_aupro_weights_regions_of_different_sizes_equally() -> None:
    maps = np.zeros((2, 16, 16), dtype=np.float32)
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 1:9, 1:9] = True  # a large region, 64 px, found only partly
    masks[0, 12:14, 12:14] = True  # a small region, 4 px, found fully
    masks[1, 5:7, 2:3] = True  # a region in another image, 2 px, missed
    maps[0, 1:9, 1:5] = 3.0
    maps[0, 12:14, 12:14] = 2.0
    maps[1] = np.linspace(0, 2.5, 256).reshape(16, 16)  # normal pixels across the whole range
    metrics = AnomalyMetrics(mode="exact")
    metrics.update(torch.tensor([3.0, 2.5]), torch.tensor([1, 1]), ["s", "s"], torch.from_numpy(maps), masks)
    results = metrics.compute()
    expected = direct_aupro(maps, masks)
    assert results["pixel_aupro"] == pytest.approx(expected, abs=1e-9)
    assert 0.1 < expected < 0.9
    # a pixel-weighted overlap would be dominated by the large region: different value
    assert results["pixel_aupro"] != pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-3)


@pytest.mark.filterwarnings("ignore:(image|sample)_.* is undefined")  # all views anomalous
def test_connectivity_decides_which_pixels_form_a_region() -> None:
    maps = np.zeros((1, 12, 12), dtype=np.float32)
    masks = np.zeros((1, 12, 12), dtype=bool)
    masks[0, 2:6, 2:6] = True  # 16 px, scored high
    masks[0, 6:7, 6:7] = True  # 1 px touching the square only diagonally, scored low
    maps[0, 2:6, 2:6] = 2.0
    maps[0] += np.linspace(0, 1, 144, dtype=np.float32).reshape(12, 12)
    results = {}
    for connectivity in (4, 8):
        metrics = AnomalyMetrics(mode="exact", connectivity=connectivity)
        metrics.update(torch.tensor([3.0]), torch.tensor([1]), ["s"], torch.from_numpy(maps), masks)
        results[connectivity] = metrics.compute()["pixel_aupro"]
        assert results[connectivity] == pytest.approx(direct_aupro(maps, masks, connectivity), abs=1e-9)
        assert metrics.n_regions == (2 if connectivity == 4 else 1)
    assert results[4] < results[8] - 0.05


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_constant_scores_give_chance_level(mode: str) -> None:
    data = blob_data(seed=2, n_samples=4, size=16)
    data["maps"] = np.ones_like(data["maps"])
    data["scores"] = np.ones_like(data["scores"])
    metrics = AnomalyMetrics(mode=mode)
    feed(metrics, data)
    results, warned = warned_names(metrics.compute)
    assert warned == set(AUPR_KEYS)  # ADEval refuses constant scores (no threshold range)
    assert all(math.isnan(results[key]) for key in AUPR_KEYS)
    assert results["image_auroc"] == 0.5
    assert results["sample_auroc"] == 0.5
    assert results["pixel_auroc"] == 0.5
    n_positive, n_pixels = data["masks"].sum(), data["masks"].size
    # exact: ties get the precision after the tie group (scikit-learn); binned: tied samples interleave
    expected_ap = n_positive / n_pixels if mode == "exact" else (n_positive + 1) / (n_pixels + 1)
    assert results["pixel_ap"] == pytest.approx(expected_ap, abs=1e-12)
    assert results["image_f1max"] == pytest.approx(f1_max(data["labels"], data["scores"]))
    # PRO rises linearly with FPR from (0, 0) to (1, 1): area 0.3^2 / 2, normalised by 0.3
    assert results["pixel_aupro"] == pytest.approx(0.15)
    assert results["pixel_aupro"] == pytest.approx(direct_aupro(data["maps"], data["masks"]))


@pytest.mark.parametrize("mode", ["exact", "binned"])
@pytest.mark.parametrize("label", [0, 1])
def test_one_class_sets_are_nan_with_a_warning(mode: str, label: int) -> None:
    data = blob_data(seed=3, n_samples=2, size=16)
    data["labels"][:] = label
    data["masks"][:] = False
    metrics = AnomalyMetrics(mode=mode)
    feed(metrics, data)
    results, warned = warned_names(metrics.compute)
    undefined = {"image_auroc", "image_ap", "image_f1max", "sample_auroc", "sample_ap", "sample_auroc_mean",
                 "sample_ap_mean", *PIXEL_KEYS, *AUPR_KEYS}  # fmt: skip
    assert warned == undefined
    assert all(math.isnan(results[key]) for key in undefined)


def test_aupro_without_regions_is_nan_while_image_metrics_are_defined() -> None:
    metrics = AnomalyMetrics(mode="binned")
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    metrics.update(torch.tensor([1.0, 2.0]), torch.tensor([0, 1]), ["a", "b"], torch.rand(2, 8, 8), masks)
    results, warned = warned_names(metrics.compute)
    assert warned == set(PIXEL_KEYS)
    assert all(math.isnan(results[key]) for key in PIXEL_KEYS)
    assert results["image_auroc"] == 1.0


def test_compute_before_any_update_is_all_nan_with_warnings() -> None:
    results, warned = warned_names(AnomalyMetrics().compute)
    assert warned == set(results)
    assert len(results) == 13 and all(math.isnan(value) for value in results.values())


@pytest.mark.parametrize("outliers", [False, True])
def test_binned_agrees_with_exact(outliers: bool) -> None:
    data = blob_data(seed=4, n_samples=10, size=64, outliers=outliers)
    results = {}
    for mode in ("exact", "binned"):
        metrics = AnomalyMetrics(mode=mode)
        feed(metrics, data)
        results[mode] = metrics.compute()
    for key, value in results["exact"].items():
        tolerance = 1e-3 if key.startswith("pixel") else 0.0
        assert results["binned"][key] == pytest.approx(value, abs=tolerance), key
    assert 0.6 < results["exact"]["pixel_aupro"] < 0.99


def test_few_bins_still_approximate_but_more_bins_converge() -> None:
    data = blob_data(seed=5, n_samples=6, size=48)
    errors = []
    exact = AnomalyMetrics(mode="exact")
    feed(exact, data)
    reference = exact.compute()
    for n_bins in (64, 1024, 2**16):
        binned = AnomalyMetrics(mode="binned", n_bins=n_bins)
        feed(binned, data)
        result = binned.compute()
        errors.append({key: abs(result[key] - reference[key]) for key in PIXEL_KEYS})
    # pixel_aupr samples ADEval's 1000 strips, so bins near that width alias; the default bins are far finer
    worst = [max(error[key] for key in PIXEL_KEYS if key != "pixel_aupr") for error in errors]
    assert worst[0] > worst[1] > worst[2]
    assert max(errors[2].values()) < 1e-4


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_merging_two_objects_equals_feeding_one(mode: str) -> None:
    data = with_classes(blob_data(seed=6, n_samples=8, size=32))
    data["maps"][: len(data["keys"]) // 2] *= 0.01  # the two halves cover very different score ranges
    half = len(data["keys"]) // 2
    first, second = ({k: v[:half] for k, v in data.items()}, {k: v[half:] for k, v in data.items()})
    single, left, right = (AnomalyMetrics(mode=mode) for _ in range(3))
    feed(single, data, splits=(half,))
    feed(left, first, splits=())
    feed(right, second, splits=())
    restored = AnomalyMetrics(mode=mode)
    restored.merge_state(right.metric_state)  # a state dict into an empty object, as after a gather
    left.merge_state(restored)
    expected = single.compute()
    assert any(key.startswith("sample_auroc_") and key != "sample_auroc_mean" for key in expected)
    assert left.compute() == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="cannot merge"):
        left.merge_state(AnomalyMetrics(mode="exact" if mode == "binned" else "binned"))
    with pytest.raises(ValueError, match="cannot merge"):
        left.merge_state(AnomalyMetrics(mode=mode, connectivity=4))


def test_binned_state_does_not_grow_with_updates() -> None:
    metrics = AnomalyMetrics(mode="binned", n_bins=4096)
    generator = torch.Generator().manual_seed(0)

    def update(scale: float) -> None:
        maps = torch.randn(4, 32, 32, generator=generator) * scale
        masks = torch.rand(4, 32, 32, generator=generator) > 0.9
        metrics.update(maps.amax(dim=(1, 2)), torch.tensor([0, 1, 0, 1]), ["a", "a", "b", "b"], maps, masks)

    def pixel_state_bytes() -> int:
        return metrics.histogram.nbytes + metrics.pixel_extremes.nbytes + metrics.n_regions.nbytes

    def histogram() -> ExpandingHistogram:
        return ExpandingHistogram.from_tensor(metrics.histogram, channels=3)

    update(1.0)
    size_after_one, exponent_after_one = pixel_state_bytes(), histogram().exponent
    for step in range(30):
        update(1.5**step)  # ever wider ranges force the grid to expand
    assert pixel_state_bytes() == size_after_one == (3 * 4096 + 3) * 8 + 3 * 8 + 8
    assert histogram().exponent > exponent_after_one
    assert histogram().counts[:2].sum() == 31 * 4 * 32 * 32
    # the only growing states are the per-view lists: 4 entries per update, none per pixel
    lists = {name: state for name, state in metrics.metric_state.items() if isinstance(state, list)}
    assert set(lists) == {"image_scores", "image_labels", "sample_ids", "sample_classes"}
    assert all(sum(len(part) for part in state) == 31 * 4 for state in lists.values())


def test_expanding_histogram_rebins_exactly() -> None:
    rng = np.random.default_rng(7)
    chunks = [
        rng.normal(0, 1e-3, 100),
        rng.normal(5, 1, 100),
        rng.normal(-300, 50, 100),
        rng.normal(1e4, 1, 5),
    ]
    histogram = ExpandingHistogram(n_bins=256, channels=1)
    for chunk in chunks:
        histogram.add(torch.from_numpy(chunk), channel=0)
    values = np.concatenate(chunks)
    direct = np.bincount(
        (np.floor(values / 2.0**histogram.exponent) - histogram.start).astype(np.int64), minlength=256
    )
    assert np.array_equal(histogram.counts[0].numpy(), direct)
    # a histogram of a different history merges onto the same grid exactly
    other = ExpandingHistogram(n_bins=256, channels=1)
    other.add(torch.from_numpy(chunks[0]), channel=0)
    other.merge(histogram)
    assert other.exponent == histogram.exponent
    assert other.counts[0].sum() == 405


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_scores": torch.ones(3, 1)}, "image_scores must have shape"),
        ({"image_scores": torch.tensor([1.0, float("nan"), 0.0, 1.0])}, "NaN or infinite"),
        ({"image_labels": torch.tensor([0, 1, 2, 0])}, "image_labels must hold 0/1"),
        ({"image_labels": torch.tensor([0, 1, 1])}, "image_labels must have shape"),
        ({"sample_keys": ["a", "b"]}, "sample_keys must be a sequence of 4"),
        ({"sample_keys": "abcd"}, "sample_keys must be a sequence"),
        ({"anomaly_maps": None}, "anomaly_maps and gt_masks are required"),
        ({"anomaly_maps": torch.rand(4, 1, 8, 8)}, r"anomaly_maps must have shape \[N=4, H, W\]"),
        ({"gt_masks": torch.zeros(4, 8, 9, dtype=torch.bool)}, "gt_masks must have the shape"),
        ({"gt_masks": torch.full((4, 8, 8), 0.5)}, "gt_masks must hold 0/1"),
        ({"anomaly_maps": torch.full((4, 8, 8), float("inf"))}, "anomaly_maps contains NaN"),
        ({"sample_classes": ["OK", "HS"]}, "sample_classes must be a sequence of 4"),
        ({"sample_classes": ["OK", "OK", "HS", 3]}, "sample_classes must hold strings"),
        (
            {"sample_classes": ["OK", "OK", "X" * (CLASS_NAME_BYTES + 1), "HS"]},
            f"sample class 'XXX.*at most {CLASS_NAME_BYTES} UTF-8 bytes",
        ),
    ],
)
def test_update_rejects_malformed_inputs(kwargs: dict, message: str) -> None:
    inputs = {
        "image_scores": torch.rand(4),
        "image_labels": torch.tensor([0, 1, 0, 1]),
        "sample_keys": ["a", "a", "b", "b"],
        "anomaly_maps": torch.rand(4, 8, 8),
        "gt_masks": torch.zeros(4, 8, 8, dtype=torch.bool),
        "sample_classes": ["OK", "OK", "HS", "HS"],
    }
    metrics = AnomalyMetrics()
    empty = {
        name: state.clone() for name, state in metrics.metric_state.items() if isinstance(state, torch.Tensor)
    }
    with pytest.raises(ValueError, match=message):
        metrics.update(**{**inputs, **kwargs})
    for name, state in metrics.metric_state.items():  # nothing half-added
        assert torch.equal(state, empty[name]) if name in empty else state == [], name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fast"}, "mode"),
        ({"connectivity": 6}, "connectivity"),
        ({"aupro_fpr_limit": 0}, "aupro_fpr_limit"),
        ({"n_bins": 2}, "n_bins"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnomalyMetrics(**kwargs)


def test_reset_forgets_everything() -> None:
    data = blob_data(seed=8, n_samples=4, size=16)
    metrics = AnomalyMetrics()
    feed(metrics, data)
    before = metrics.compute()
    feed(metrics, blob_data(seed=9, n_samples=4, size=16))
    metrics.reset()
    feed(metrics, data)
    assert metrics.compute() == pytest.approx(before, abs=1e-12)


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_compute_gathers_all_ranks_through_torchmetrics_sync(mode: str) -> None:
    """Two ranks simulated in one process: torchmetrics' sync runs with a gather that returns both ranks'
    tensors, as gloo/NCCL do; it stacks them and applies each state's reduction (cat, sum, the histogram
    merge, min/max of the extremes)."""
    data = with_classes(blob_data(seed=10, n_samples=6, size=24))
    sent: list[list[torch.Tensor]] = []  # per rank: the tensors torchmetrics gathers, in state order

    def gather_for(rank: int):
        calls = itertools.count()

        def all_gather(tensor: torch.Tensor, group: object = None) -> list[torch.Tensor]:
            i = next(calls)
            assert torch.equal(tensor, sent[rank][i])
            return [sent[0][i], sent[1][i]]

        return all_gather

    ranks = [
        AnomalyMetrics(mode=mode, dist_sync_fn=gather_for(rank), distributed_available_fn=lambda: True)
        for rank in range(2)
    ]
    for rank, metrics in enumerate(ranks):
        feed(metrics, {key: value[rank::2] for key, value in data.items()})  # views of a sample on both ranks
    for metrics in ranks:
        states = metrics.metric_state.values()
        sent.append([torch.cat(state) if isinstance(state, list) else state for state in states])
    single = AnomalyMetrics(mode=mode)
    feed(single, data)
    expected = single.compute()
    for metrics in ranks:
        local = {name: len(state) for name, state in metrics.metric_state.items() if isinstance(state, list)}
        assert metrics.compute() == pytest.approx(expected, abs=1e-12)
        # after compute the rank holds its own states again (torchmetrics unsyncs)
        assert {name: len(state) for name, state in metrics.metric_state.items() if name in local} == local


def test_sample_auroc_per_class_against_all_normal_samples_matches_sklearn() -> None:
    rng = np.random.default_rng(12)
    n_samples, n_views = 60, 5
    classes = rng.choice(["OK", "HS", "XV", "AK"], size=n_samples, p=[0.4, 0.2, 0.2, 0.2])
    view_labels = np.zeros((n_samples, n_views), dtype=np.int64)
    for sample in np.flatnonzero(classes != "OK"):  # a defect seen by one to three views
        view_labels[sample, rng.choice(n_views, size=rng.integers(1, 4), replace=False)] = 1
    shift = {"OK": 0.0, "HS": 0.5, "XV": 1.5, "AK": 3.0}
    scores = np.round(rng.normal(size=(n_samples, n_views)) + view_labels * [[shift[c]] for c in classes], 1)
    order = rng.permutation(n_samples * n_views)
    view_sample = np.repeat(np.arange(n_samples), n_views)[order]
    metrics = AnomalyMetrics(mode="exact", pixel_metrics=False)
    for part in np.array_split(np.arange(len(order)), 7):
        metrics.update(
            torch.from_numpy(scores.ravel()[order][part]),
            torch.from_numpy(view_labels.ravel()[order][part]),
            [f"s{i}" for i in view_sample[part]],
            sample_classes=[str(classes[i]) for i in view_sample[part]],
        )
    results = metrics.compute()
    sample_scores = scores.max(axis=1)
    normal = classes == "OK"
    expected = {}
    for name in ("AK", "HS", "XV"):
        chosen = normal | (classes == name)
        expected[f"sample_auroc_{name}"] = roc_auc_score(classes[chosen] == name, sample_scores[chosen])
    assert {key: results[key] for key in expected} == pytest.approx(expected, abs=1e-12)
    assert [key for key in results if key.startswith("sample_auroc_") and key != "sample_auroc_mean"] == list(
        expected
    )
    assert len(set(expected.values())) == 3  # the classes really differ


def test_states_follow_device_moves_and_keep_their_dtypes() -> None:
    data = with_classes(blob_data(seed=13, n_samples=4, size=16))
    metrics = AnomalyMetrics(mode="binned")
    feed(metrics, data)
    expected = metrics.compute()
    dtypes = {
        name: (state[0] if isinstance(state, list) else state).dtype
        for name, state in metrics.metric_state.items()
    }
    assert dtypes["image_scores"] == dtypes["histogram"] == torch.float64
    metrics = metrics.to("cpu").double().half().to(torch.float16).set_dtype(torch.bfloat16)
    metrics.cpu()
    after = {
        name: (state[0] if isinstance(state, list) else state) for name, state in metrics.metric_state.items()
    }
    assert {name: state.dtype for name, state in after.items()} == dtypes
    assert all(state.device.type == "cpu" for state in after.values())
    metrics.update(
        torch.tensor([1.0]),
        torch.tensor([0]),
        ["new"],
        torch.rand(1, 16, 16),
        torch.zeros(1, 16, 16, dtype=torch.bool),
    )
    metrics.reset()
    assert metrics.histogram.dtype == torch.float64  # reset restores the defaults, whose dtypes were kept too
    feed(metrics, data)
    assert metrics.compute() == pytest.approx(expected, abs=1e-12)
    with pytest.raises(TypeError, match="update"):
        metrics(torch.tensor([1.0]), torch.tensor([0]), ["a"])
