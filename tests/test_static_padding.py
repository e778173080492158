"""EfficientNet-B5 padded as the paper's reference pads it: TF "same" fixed for a 456-px build, fed 768 px."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame

from multiflow_pl.models.backbone import FeatureExtractor
from multiflow_pl.models.static_padding import StaticSamePadConv2d

B5 = "tf_efficientnet_b5"


def tf_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding of one axis, written out from its definition: the output has ceil(size / stride)
    pixels, the window of the last one must end inside the padded input, the odd pixel goes after."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + kernel - size)
    return total // 2, total - total // 2


def strided_conv_inputs(model: torch.nn.Module, size: int) -> dict[str, int]:
    """Input side of every strided convolution for a ``size`` image, by following the strides in order."""
    sides, side = {}, size
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.stride[0] > 1:
            sides[name] = side
            side = math.ceil(side / module.stride[0])
    return sides


@pytest.fixture(scope="module")
def b5_768():
    """B5 up to the 304-channel stage, random weights, 768 px, padded for a 456-px build."""
    return FeatureExtractor(B5, ["blocks.5"], input_size=768, static_padding_size=456)


def test_every_strided_conv_pads_as_tf_same_at_the_build_size(b5_768):
    convs = dict(b5_768.model.named_modules())
    sides = strided_conv_inputs(b5_768.model, 456)
    assert len(sides) == 5  # the stem and the first block of four stages
    differs_at_768 = {}
    for name, side in sides.items():
        conv = convs[name]
        assert isinstance(conv, StaticSamePadConv2d)
        before, after = tf_same(side, conv.kernel_size[0], conv.stride[0])
        assert conv.static_pad == (before, after, before, after), name
        side_768 = strided_conv_inputs(b5_768.model, 768)[name]
        differs_at_768[name] = tf_same(side_768, conv.kernel_size[0], conv.stride[0]) != (before, after)
    # the reference's two symmetric ones: k3 of the 128-channel stage, k5 of the 304-channel stage
    assert {name for name, differs in differs_at_768.items() if differs} == {
        "blocks.3.0.conv_dw",
        "blocks.5.0.conv_dw",
    }
    assert convs["blocks.3.0.conv_dw"].static_pad == (1, 1, 1, 1)
    assert convs["blocks.5.0.conv_dw"].static_pad == (2, 2, 2, 2)
    assert b5_768.cache_signature()["static_padding_size"] == 456


def test_b5_features_at_768_equal_an_explicit_pad_then_convolve(b5_768):
    """The whole network to the 304-channel stage, against timm's own B5 (same weights) whose strided
    convolutions are recomputed by hand with the padding the rule gives for 456 px."""
    reference = timm.create_model(B5, pretrained=False, num_classes=0).eval()  # timm's padding
    assert not reference.load_state_dict(b5_768.model.state_dict(), strict=False).unexpected_keys
    build_sides = strided_conv_inputs(reference, 456)
    recomputed = []

    def pad_then_convolve(name):
        def hook(conv, args, _output):
            before, after = tf_same(build_sides[name], conv.kernel_size[0], conv.stride[0])
            recomputed.append(name)
            padded = F.pad(args[0], (before, after, before, after))
            return F.conv2d(padded, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)

        return hook

    for name, module in reference.named_modules():
        if isinstance(module, Conv2dSame):
            module.register_forward_hook(pad_then_convolve(name))
    images = torch.rand(1, 3, 768, 768, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.bn1(reference.conv_stem((images - b5_768.mean) / b5_768.std))
        expected = reference.blocks[:6](expected)
    features = b5_768(images)
    assert sorted(recomputed) == sorted(build_sides)
    assert features.shape == (1, 304, 24, 24)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
