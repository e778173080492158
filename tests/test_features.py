"""The feature cache: built once, memory-mapped, reused, invalidated by every key ingredient, self-healing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from multiflow_pl.data.dataset import CachedFeatureDataset, MultiViewImageDataset
from multiflow_pl.data.features import FeatureCache
from multiflow_pl.data.sample import MultiViewSample, ViewRecord
from multiflow_pl.models.backbone import FeatureExtractor
from multiflow_pl.models.flow import MultiViewFlow
from multiflow_pl.models.model import MultiFlowModel


def make_samples(
    root: Path, write_image, n: int = 3, views=("C1", "C2", "C3"), size: int = 40
) -> list[MultiViewSample]:
    samples = []
    for i in range(n):
        records = tuple(
            ViewRecord(v, write_image(root / f"s{i}" / f"{v}.png", size=size, seed=10 * i + j), None, 0, "OK")
            for j, v in enumerate(views)
        )
        samples.append(MultiViewSample(f"s{i}", "toy", 0, records))
    return samples


@pytest.fixture
def extractor() -> FeatureExtractor:
    return FeatureExtractor("resnet18", ["layer1"], input_size=32)


def image_dataset(samples, extractor, **kwargs) -> MultiViewImageDataset:
    return MultiViewImageDataset(samples, extractor.input_size, 0, extractor.feature_size, **kwargs)


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.glob("*.json"))


def test_cache_matches_direct_extraction_and_is_reused(tmp_path, write_image, extractor):
    samples = make_samples(tmp_path / "img", write_image)
    dataset = image_dataset(samples, extractor)
    cache = FeatureCache(tmp_path / "cache", batch_size=2, show_progress=False)
    features, foreground = cache.load_or_build(extractor, dataset)
    assert isinstance(features, np.memmap)
    assert features.shape == (3, 3, 64, 8, 8) and features.dtype == np.float16
    assert foreground.shape == (3, 3, 8, 8) and foreground.min() == 1
    direct = extractor(dataset[1]["images"])
    assert torch.allclose(
        torch.from_numpy(np.array(features[1], dtype=np.float32)), direct, atol=2e-2, rtol=1e-2
    )
    mtime = (tmp_path / "cache" / entries(tmp_path / "cache")[0]).stat().st_mtime_ns
    again, _ = cache.load_or_build(extractor, dataset)
    assert (tmp_path / "cache" / entries(tmp_path / "cache")[0]).stat().st_mtime_ns == mtime
    assert np.array_equal(np.asarray(again), np.asarray(features))
    assert not list((tmp_path / "cache").glob("*.tmp-*"))
    cached = CachedFeatureDataset(samples, again, _, 0)
    assert cached[2]["features"].shape == (3, 64, 8, 8)
    assert "images" not in cached[2]


def test_key_changes_with_each_ingredient(tmp_path, write_image, extractor):
    samples = make_samples(tmp_path / "img", write_image)
    cache = FeatureCache(tmp_path / "cache", show_progress=False)
    base = cache.key(extractor, image_dataset(samples, extractor))
    assert base == cache.key(extractor, image_dataset(samples, extractor))
    other_seed = FeatureExtractor("resnet18", ["layer1"], input_size=32, init_seed=1)
    other_layer = FeatureExtractor("resnet18", ["layer2"], input_size=32)
    other_size = FeatureExtractor("resnet18", ["layer1"], input_size=64)
    bfloat16 = FeatureExtractor("resnet18", ["layer1"], input_size=32, precision="bfloat16")
    build_padding = FeatureExtractor("resnet18", ["layer1"], input_size=32, static_padding_size=16)
    keys = {
        cache.key(bfloat16, image_dataset(samples, bfloat16)),
        cache.key(build_padding, image_dataset(samples, build_padding)),
        cache.key(extractor, image_dataset(samples, extractor, resize="pil")),
        cache.key(other_seed, image_dataset(samples, other_seed)),
        cache.key(other_layer, image_dataset(samples, other_layer)),
        cache.key(other_size, image_dataset(samples, other_size)),
        cache.key(extractor, image_dataset(samples[:2], extractor)),
        cache.key(extractor, image_dataset(samples, extractor, flip_views=["C2"])),
        cache.key(extractor, image_dataset(samples, extractor, foreground="auto")),
    }
    assert base not in keys and len(keys) == 9
    path = samples[0].views[0].image_path
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert cache.key(extractor, image_dataset(samples, extractor)) != base


def test_corrupted_cache_is_rebuilt_with_a_warning(tmp_path, write_image, extractor):
    samples = make_samples(tmp_path / "img", write_image)
    dataset = image_dataset(samples, extractor)
    cache = FeatureCache(tmp_path / "cache", show_progress=False)
    good = np.array(cache.load_or_build(extractor, dataset)[0])
    features_file = next((tmp_path / "cache").glob("*.features.npy"))
    features_file.write_bytes(features_file.read_bytes()[:200])  # truncated
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt, _ = cache.load_or_build(extractor, dataset)
    assert np.array_equal(np.asarray(rebuilt), good)


def test_interrupted_build_leaves_no_entry(tmp_path, write_image, extractor, monkeypatch):
    samples = make_samples(tmp_path / "img", write_image)
    dataset = image_dataset(samples, extractor)
    cache = FeatureCache(tmp_path / "cache", batch_size=1, show_progress=False)
    calls = {"n": 0}
    real_forward = extractor.forward

    def failing_forward(images):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_forward(images)

    monkeypatch.setattr(extractor, "forward", failing_forward)
    with pytest.raises(KeyboardInterrupt):
        cache.load_or_build(extractor, dataset)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_model_trained_on_cached_features_extracts_them_from_images_bit_for_bit(tmp_path, write_image):
    extractor = FeatureExtractor("efficientnet_lite0", ["blocks.4"], input_size=256).eval()  # the demo's
    samples = make_samples(tmp_path / "img", write_image, n=4, size=256)
    dataset = image_dataset(samples, extractor)
    images = torch.stack([dataset[i]["images"] for i in range(4)])
    flow = MultiViewFlow(extractor.out_channels, 3, "ring", n_blocks=1, hidden=8, kernel_sizes=(3,))
    model = MultiFlowModel(extractor, flow, round_features=True)
    # before the cache is built: building it turns the extractor's weights channels-last
    with torch.no_grad():
        default_layout = extractor(images.flatten(0, 1)).half().float().view(4, 3, -1, 16, 16)
        rounded = model.extract(images)
    cached, _ = FeatureCache(tmp_path / "cache", batch_size=4, show_progress=False).load_or_build(
        extractor, dataset
    )
    assert torch.equal(rounded, torch.from_numpy(np.array(cached, dtype=np.float32)))
    # PyTorch's default layout rounds differently: the test would fail without the cache's layout
    assert not torch.equal(default_layout, rounded)
