"""PackedConvWeight (speed/prepacked_conv): the weight laid out for oneDNN once, the same values as F.conv2d
bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from helpers.flows import make_flow

from multiflow_pl.models.flow import noise_condition
from multiflow_pl.speed.folded_subnet import FoldedSubnetKernel, keep_folded_weights
from multiflow_pl.speed.prepacked_conv import PackedConvWeight, runs_on_onednn


def channels_last(batch: int, channels: int, size: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, size, size, channels, generator=generator).to(dtype)
    return image.permute(0, 3, 1, 2)  # a pixel-major view, as the flow's subnets convolve


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("groups", "kernel"), [(1, 3), (4, 3), (5, 5), (2, 1)])
def test_packed_weight_convolves_exactly_as_conv2d(dtype, groups, kernel):
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(8 * groups, 6, kernel, kernel, generator=generator).to(dtype)
    bias = torch.randn(8 * groups, generator=generator).to(dtype)
    packed = PackedConvWeight(weight, groups)
    # the first call packs for its shape; other batch sizes and map sizes reuse that layout. Where F.conv2d
    # would not run oneDNN (float32, one group, batch 1: PyTorch's own kernel), neither does the packed one.
    for batch, size, seed in ((8, 18, 0), (1, 18, 1), (3, 11, 2), (8, 18, 3)):
        image = channels_last(batch, 6 * groups, size, dtype, seed)
        assert runs_on_onednn(image, weight, groups) == (batch > 1 or groups > 1 or dtype == torch.bfloat16)
        out = packed.conv2d(image, bias)
        assert torch.equal(out, F.conv2d(image, weight, bias, groups=groups))
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert packed._packed is not None and packed._packed.is_mkldnn
    assert torch.equal(packed.conv2d(image, None), F.conv2d(image, weight, groups=groups))


def test_packed_weight_leaves_convolutions_oneDNN_would_not_run_to_conv2d():
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    image = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    packed = PackedConvWeight(weight, 1)
    assert not runs_on_onednn(image, weight, 1)
    assert torch.equal(packed.conv2d(image, None), F.conv2d(image, weight))
    assert packed._packed is None


def kept_convs(kernels: list[FoldedSubnetKernel]) -> list:
    """The folded convolutions the subnet kernels keep inside a keep_folded_weights block."""
    return [conv for kernel in kernels for convs in kernel._folded.values() for conv in convs]


@pytest.mark.parametrize("conv_dtype", [None, "bfloat16"])
@pytest.mark.parametrize(("graph", "mode"), [("top_ring", "per_edge"), ("ring", "shared")])
def test_kept_weights_are_packed_and_score_exactly_as_folded_in_every_call(graph, mode, conv_dtype):
    flow = make_flow(graph, mode, conv_dtype=conv_dtype, channels=12)
    generator = torch.Generator().manual_seed(2)
    x, cond = noise_condition(torch.randn(3, 5, 12, 8, 8, generator=generator), generator=generator)
    subnets = [m for m in flow.modules() if isinstance(m, FoldedSubnetKernel)]
    with torch.no_grad():
        expected, expected_cond = flow.nll(x), flow.nll(x, cond)
        with keep_folded_weights(flow):
            assert torch.equal(flow.nll(x), expected) and torch.equal(flow.nll(x, cond), expected_cond)
            assert torch.equal(flow.nll(x[:1]), expected[:1])  # another batch size, the same layout
            kept = kept_convs(subnets)
    assert kept and all(conv.packed is not None and conv.packed._packed is not None for conv in kept)
    with torch.no_grad(), keep_folded_weights(flow, pack=False):
        assert torch.equal(flow.nll(x), expected)
        with keep_folded_weights(flow):  # nested: the outer block's choice holds
            assert torch.equal(flow.nll(x, cond), expected_cond)
        kept = kept_convs(subnets)
    assert kept and all(conv.packed is None for conv in kept)
