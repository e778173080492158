"""The frozen timm feature extractor: layers, shapes, frozen state, local weights files, clear errors."""

from __future__ import annotations

import pytest
import timm
import torch

from multiflow_pl.models.backbone import BackboneWeightsError, FeatureExtractor


def test_shapes_layers_and_frozen():
    extractor = FeatureExtractor("resnet18", ["layer2", "layer3"], input_size=64)
    assert extractor.out_channels == 128 + 256
    assert extractor.feature_size == (8, 8)
    feats = extractor(torch.rand(2, 3, 64, 64))
    assert feats.shape == (2, 384, 8, 8)
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.model.training  # batch-norm statistics stay frozen


def test_random_init_is_seeded_and_in_cache_signature():
    a = FeatureExtractor("resnet18", ["layer1"], input_size=32, init_seed=3)
    b = FeatureExtractor("resnet18", ["layer1"], input_size=32, init_seed=3)
    c = FeatureExtractor("resnet18", ["layer1"], input_size=32, init_seed=4)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    assert a.cache_signature() == b.cache_signature()
    assert a.cache_signature()["weights"] != c.cache_signature()["weights"]


def test_weights_file_is_loaded(tmp_path):
    reference = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    extractor = FeatureExtractor("resnet18", ["layer1"], weights_file=str(path), input_size=32)
    assert torch.equal(extractor.model.conv1.weight, reference.conv1.weight)


def test_missing_weights_file_and_unknown_layer(tmp_path):
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        FeatureExtractor("resnet18", ["layer1"], weights_file=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="no layer"):
        FeatureExtractor("resnet18", ["layer9"])


def test_hub_failure_says_how_to_pass_a_file(monkeypatch):
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no network")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(BackboneWeightsError, match="weights_file"):
        FeatureExtractor("resnet18", ["layer1"], pretrained=bool(1))
