"""backbone.weights_file: every tensor that runs comes from the file, in timm's or EfficientNet-PyTorch's
names, or the run stops naming what is missing or does not fit."""

from __future__ import annotations

import random

import pytest
import timm
import torch

from multiflow_pl.models.backbone import BackboneWeightsError, FeatureExtractor
from multiflow_pl.models.efficientnet_pytorch_names import efficientnet_pytorch_names

B5 = "tf_efficientnet_b5"
# EfficientNet-PyTorch's names of timm's modules, written out independently of the project's table
BLOCK_WITH_EXPANSION = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv",
                        "bn2": "_bn1", "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand",
                        "conv_pwl": "_project_conv", "bn3": "_bn2"}  # fmt: skip
BLOCK_WITHOUT = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce",
                 "se.conv_expand": "_se_expand", "conv_pw": "_project_conv", "bn2": "_bn2"}  # fmt: skip
OUTSIDE = {
    "conv_stem": "_conv_stem",
    "bn1": "_bn0",
    "conv_head": "_conv_head",
    "bn2": "_bn1",
    "classifier": "_fc",
}


def random_model(name: str, seed: int, **kwargs) -> torch.nn.Module:
    """A timm model whose every tensor (batch-norm statistics included) is distinct random numbers."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand_like(tensor) + 0.5 if "running_var" in key else torch.randn_like(tensor)
                )
            else:
                tensor.fill_(7)
    return model


def as_efficientnet_pytorch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict renamed as EfficientNet-PyTorch names it (blocks numbered through the net)."""
    flat, renamed = {}, {}
    for s, stage in enumerate(model.blocks):
        for j, _ in enumerate(stage):
            flat[f"blocks.{s}.{j}"] = len(flat)
    for key, tensor in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "blocks":
            block, inner = ".".join(parts[:3]), ".".join(parts[3:-1])
            table = (
                BLOCK_WITH_EXPANSION
                if "conv_pwl" in dict(model.named_modules())[block]._modules
                else BLOCK_WITHOUT
            )
            renamed[f"_blocks.{flat[block]}.{table[inner]}.{parts[-1]}"] = tensor.clone()
        else:
            renamed[f"{OUTSIDE[parts[0]]}.{parts[-1]}"] = tensor.clone()
    return renamed


def shuffled(state: dict) -> dict:
    keys = list(state)
    random.Random(0).shuffle(keys)
    return {key: state[key] for key in keys}


def test_efficientnet_pytorch_names_cover_b5_one_to_one():
    model = timm.create_model(B5, pretrained=False)  # with its classifier
    names = efficientnet_pytorch_names(model)
    assert sorted(names.values()) == sorted(model.state_dict())
    assert names == {
        key: timm_key
        for key, timm_key in zip(as_efficientnet_pytorch(model), model.state_dict(), strict=True)
    }
    assert names["_blocks.13._depthwise_conv.weight"] == "blocks.3.0.conv_dw.weight"
    assert names["_blocks.35._bn2.running_var"] == "blocks.5.8.bn3.running_var"


def test_efficientnet_pytorch_file_loads_every_tensor(tmp_path):
    source = random_model(B5, seed=1)  # with the classifier, as EfficientNet-PyTorch's files are
    path = tmp_path / "efficientnet-b5.pth"
    torch.save(shuffled(as_efficientnet_pytorch(source)), path)
    extractor = FeatureExtractor(B5, ["blocks.5"], weights_file=str(path), input_size=64)
    loaded = extractor.model.state_dict()
    expected = source.state_dict()
    assert len(loaded) == 780
    for key, tensor in loaded.items():
        assert torch.equal(tensor, expected[key]), key
    assert "file" in extractor.weights_source()


def test_timm_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    source = random_model("resnet18", seed=2)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    extractor = FeatureExtractor("resnet18", ["layer2"], weights_file=str(path), input_size=32)
    for key, tensor in extractor.model.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[key]), key


def test_file_with_wrong_keys_stops(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({f"encoder.{k}": v for k, v in random_model("resnet18", seed=0).state_dict().items()}, path)
    with pytest.raises(
        BackboneWeightsError, match=r"does not fit the backbone: \d+ of its \d+ tensors are missing"
    ):
        FeatureExtractor("resnet18", ["layer1"], weights_file=str(path), input_size=32)


def test_truncated_files_stop(tmp_path):
    state = random_model("resnet18", seed=0).state_dict()
    cut = tmp_path / "cut.pth"
    torch.save(state, cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(BackboneWeightsError, match=r"Cannot read weights file .*cut\.pth.*truncated"):
        FeatureExtractor("resnet18", ["layer1"], weights_file=str(cut), input_size=32)
    half = tmp_path / "half.pth"
    keys = [k for k in state if k.startswith(("conv1", "bn1", "layer1.0"))]
    torch.save({k: state[k] for k in keys}, half)
    with pytest.raises(BackboneWeightsError, match=r"missing \(first: layer1\.1\.conv1\.weight\)"):
        FeatureExtractor("resnet18", ["layer1"], weights_file=str(half), input_size=32)
    # a file that lacks only tensors after the cut fills everything that runs
    FeatureExtractor("resnet18", ["layer1.0"], weights_file=str(half), input_size=32)


def test_file_of_another_architecture_stops(tmp_path):
    b4 = timm.create_model("tf_efficientnet_b4", pretrained=False)
    timm_names = tmp_path / "b4.pth"
    torch.save(b4.state_dict(), timm_names)
    with pytest.raises(BackboneWeightsError, match=r"have another shape \(first: "):
        FeatureExtractor(B5, ["blocks.1"], weights_file=str(timm_names), input_size=32)
    b7 = as_efficientnet_pytorch(timm.create_model("tf_efficientnet_b7", pretrained=False))
    pytorch_names = tmp_path / "efficientnet-b7.pth"
    torch.save(b7, pytorch_names)
    with pytest.raises(BackboneWeightsError, match="EfficientNet-PyTorch tensors have no counterpart"):
        FeatureExtractor(B5, ["blocks.1"], weights_file=str(pytorch_names), input_size=32)
