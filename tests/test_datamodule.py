"""The data module on a tiny generated benchmark: shapes, labels, flips, image vs cached-feature batches."""

from __future__ import annotations

import pytest
import torch

from multiflow_pl.data.datamodule import MultiViewDataModule
from multiflow_pl.data.features import FeatureCache
from multiflow_pl.models.backbone import FeatureExtractor


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from multiflow_pl.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, categories=["box"], n_train=4, n_test=8, size=64, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor("resnet18", ["act1"], input_size=32, pool=2)


def make_dm(root, extractor, tmp_path, **kwargs) -> MultiViewDataModule:
    return MultiViewDataModule(
        root,
        "box",
        resolution=64,
        eval_size=48,
        batch_size=2,
        eval_batch_size=4,
        cache=FeatureCache(tmp_path / "cache", show_progress=False),
        feature_extractor=extractor,
        **kwargs,
    )


def test_cached_batches_have_the_documented_shapes(tiny_root, extractor, tmp_path):
    dm = make_dm(tiny_root, extractor, tmp_path)
    dm.setup("fit")
    dm.setup("test")
    train = next(iter(dm.train_dataloader()))
    assert train["features"].shape == (2, 5, 64, 8, 8)
    assert train["foreground"].shape == (2, 5, 8, 8)
    assert "masks" not in train and int(train["label"].sum()) == 0
    test_batches = list(dm.test_dataloader())
    test = test_batches[0]
    assert test["features"].shape == (4, 5, 64, 8, 8)
    assert test["masks"].shape == (4, 5, 1, 48, 48)
    assert len(test["key"]) == 4 and len(test["image_paths"][0]) == 5
    labels = torch.cat([b["view_labels"] for b in test_batches])
    masks = torch.cat([b["masks"] for b in test_batches])
    # a view has mask pixels iff it is labelled anomalous; a sample is anomalous iff a view is
    assert torch.equal(masks.flatten(2).amax(2) > 0, labels.bool())
    assert torch.equal(torch.cat([b["label"] for b in test_batches]), labels.amax(1))


def test_image_batches_without_cache_and_flips(tiny_root, extractor, tmp_path):
    plain = make_dm(tiny_root, extractor, tmp_path, cache_features=False)
    flipped = make_dm(tiny_root, extractor, tmp_path, cache_features=False, flip_views={"box": ["C3"]})
    plain.setup("test")
    flipped.setup("test")
    a, b = plain.datasets["test"][0], flipped.datasets["test"][0]
    assert a["images"].shape == (5, 3, 32, 32)
    assert torch.equal(a["images"][2].flip(-1), b["images"][2])
    assert torch.equal(a["images"][0], b["images"][0])
    assert torch.equal(a["masks"][2].flip(-1), b["masks"][2])


def test_unknown_format_and_foreground_are_rejected(tiny_root, extractor, tmp_path):
    with pytest.raises(ValueError, match=r"data\.format"):
        make_dm(tiny_root, extractor, tmp_path, format="zip")
    with pytest.raises(ValueError, match=r"data\.foreground"):
        make_dm(tiny_root, extractor, tmp_path, foreground="magic")
