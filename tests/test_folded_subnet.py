"""The folded subnet kernel (multiflow_pl.speed): the same function as the plain subnets, in float32 and
float64, with other noise channels, in bfloat16, with gradients, with weights kept over a scoring block; and
the batched attention kernel, the same function as the plain attention subnets (float64, noise, gradients)."""

import contextlib

import pytest
import torch
from helpers.flows import make_flow, plain
from test_flow import MODES, features

from multiflow_pl.models.attention import MESSAGE_KINDS
from multiflow_pl.models.graph import GRAPH_NAMES, view_graph
from multiflow_pl.speed import conv_choice
from multiflow_pl.speed.folded_subnet import (
    FoldedSubnetKernel,
    _slot_groups,
    conv_settings,
    keep_folded_weights,
    set_conv_dtype,
    use_folded_convolutions,
)

V = 5


def assert_plain_equals_kernel(flow, x, cond, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow's ``(z, logdet)`` by its kernels, checked against its plain subnets within ``tolerance``."""
    z, logdet = flow(x, cond)
    with plain(flow):
        z_plain, logdet_plain = flow(x, cond)
    torch.testing.assert_close(z, z_plain, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(logdet, logdet_plain, atol=tolerance, rtol=tolerance)
    return z, logdet


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("graph", GRAPH_NAMES)
def test_folded_matches_plain(graph, mode):
    flow = make_flow(graph, mode, kernel_sizes=(3, 5))
    x, cond = features()
    for c in (cond, None):
        assert_plain_equals_kernel(flow, x, c, tolerance=1e-5)


@pytest.mark.parametrize("messages", MESSAGE_KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("graph", ["top_ring", "chain", "none"])
def test_folded_matches_plain_to_round_off_in_float64(graph, mode, messages):
    flow = make_flow(graph, mode, torch.float64, kernel_sizes=(3, 5), messages=messages)
    x, cond = features(dtype=torch.float64)
    assert_plain_equals_kernel(flow, x, cond, tolerance=1e-12)


@pytest.mark.parametrize("messages", MESSAGE_KINDS)
@pytest.mark.parametrize("noise_channels", [0, 2])
def test_folded_matches_plain_with_other_noise_channels(noise_channels, messages):
    flow = make_flow("ring", "per_edge", noise_channels=noise_channels, messages=messages)
    x, _ = features()
    cond = torch.randn(2, V, noise_channels, 5, 4) if noise_channels else None  # per-view noise maps
    z, _ = assert_plain_equals_kernel(flow, x, cond, tolerance=1e-5)
    torch.testing.assert_close(flow.inverse(z, cond), x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_convolutions_stay_close_and_invertible(mode, monkeypatch):
    conv_dtypes = []
    real_direct = conv_choice.ALGORITHMS["direct"]
    monkeypatch.setitem(
        conv_choice.ALGORITHMS, "direct", lambda x, *a: conv_dtypes.append(x.dtype) or real_direct(x, *a)
    )
    flow = make_flow("top_ring", mode, kernel_sizes=(3, 5), conv_dtype="bfloat16")
    x, cond = features()
    z, logdet = flow(x, cond)
    assert set(conv_dtypes) == {torch.bfloat16} and z.dtype == logdet.dtype == torch.float32
    with plain(flow.double()):
        z_exact, logdet_exact = flow(x.double(), cond.double())
    flow.float()
    assert (z - z_exact).abs().max() < 0.05 * z_exact.abs().max()  # bfloat16: 8 significant bits
    assert (logdet - logdet_exact).abs().max() < 0.05 * logdet_exact.abs().max()
    torch.testing.assert_close(flow.inverse(z, cond), x, atol=1e-4, rtol=0)  # same convs, same inputs
    conv_dtypes.clear()
    flow.double()(x.double(), cond.double())  # float64 (the exactness checks) is left alone
    assert set(conv_dtypes) == {torch.float64}
    with pytest.raises(ValueError, match="conv_dtype"):
        make_flow(conv_dtype="float16")
    with pytest.raises(ValueError, match="conv_algorithm"):
        make_flow(conv_algorithm="fft")


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_hidden_maps_equal_widening_them_between_the_convolutions(mode, monkeypatch):
    """The hidden maps stay in bfloat16 between a subnet's convolutions; widening them to float32 there
    (relu, gathers and the shared neighbour mean in float32) gives the same values bit for bit."""
    flow = make_flow("top_ring", mode, conv_dtype="bfloat16")
    x, cond = features()
    with torch.no_grad():
        z, logdet = flow(x, cond)
        kept = FoldedSubnetKernel._conv

        def widened(self, *args, out_dtype=None):
            return kept(self, *args, out_dtype=out_dtype or x.dtype)

        monkeypatch.setattr(FoldedSubnetKernel, "_conv", widened)
        z_wide, logdet_wide = flow(x, cond)
    assert torch.equal(z, z_wide) and torch.equal(logdet, logdet_wide)


@pytest.mark.parametrize("messages", MESSAGE_KINDS)
@pytest.mark.parametrize(
    ("graph", "mode"), [("top_ring", "per_edge"), ("chain", "per_edge"), ("ring", "shared")]
)
def test_gradients_match_plain(graph, mode, messages):
    flow = make_flow(graph, mode, torch.float64, messages=messages)
    x, cond = features(dtype=torch.float64)
    grads = []
    for kernel in ("folded", "plain"):
        flow.zero_grad()
        with plain(flow) if kernel == "plain" else contextlib.nullcontext():
            z, logdet = flow(x, cond)
        (0.5 * z.pow(2).sum(2) - logdet).mean().backward()
        grads.append({name: p.grad.clone() for name, p in flow.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-10, rtol=1e-8, msg=name)
    assert grads[0]["couplings.0.subnet_a.gamma"].abs().min() > 0
    assert grads[0]["couplings.0.subnet_b.message_weight"].abs().max() > 0


@pytest.mark.parametrize("graph", GRAPH_NAMES)
def test_folded_per_edge_weights_have_no_empty_slots(graph):
    adjacency = view_graph(graph, V)
    groups = _slot_groups(adjacency)
    banks = torch.cat([bank.flatten() for _, _, bank in groups])
    # every self weight and every edge weight exactly once: no zero slots for missing edges
    assert sorted(banks.tolist()) == list(range(V + int(adjacency.sum())))
    assert sorted(torch.cat([views for views, _, _ in groups]).tolist()) == list(range(V))
    if graph == "top_ring":  # the top view hears from all four sides, each side from three views
        assert [tuple(bank.shape) for _, _, bank in groups] == [(1, 5), (4, 4)]
        assert [source is None for _, source, _ in groups] == [True, False]


@pytest.mark.parametrize(
    ("graph", "mode"), [("top_ring", "per_edge"), ("none", "per_edge"), ("ring", "shared")]
)
def test_kept_folded_weights_score_exactly_and_refold_outside_the_block(graph, mode):
    flow = make_flow(graph, mode)
    x, cond = features()
    with torch.no_grad():
        expected, expected_cond = flow.nll(x), flow.nll(x, cond)
        with keep_folded_weights(flow):
            with keep_folded_weights(flow):  # nested: the outer block keeps what the inner folded
                assert torch.equal(flow.nll(x), expected)
            assert torch.equal(flow.nll(x), expected) and torch.equal(flow.nll(x, cond), expected_cond)
            assert all(len(m._folded) == 2 for m in flow.modules() if hasattr(m, "_folded"))
            flow.couplings[0].subnet_a.gamma.mul_(0.5)  # the block promises no change: kept weights stay
            kept = flow.nll(x)
            assert torch.equal(kept, expected)
        changed = flow.nll(x)  # outside the block: folded afresh
    assert not torch.equal(changed, expected)
    with keep_folded_weights(flow):
        loss = flow.nll(x).mean()  # gradients recorded: folded in the call, so gamma gets its gradient
        loss.backward()
    assert torch.equal(flow.nll(x).detach(), changed)
    assert flow.couplings[0].subnet_a.gamma.grad.abs().sum() > 0
    assert all(m._folded is None for m in flow.modules() if hasattr(m, "_folded"))


def test_set_conv_dtype_switches_a_float32_flow_to_bfloat16_convolutions():
    flow = make_flow("top_ring", "per_edge")
    reference = make_flow("top_ring", "per_edge", conv_dtype="bfloat16")
    x, _ = features()
    with torch.no_grad(), keep_folded_weights(flow):
        exact = flow.nll(x)
        set_conv_dtype(flow, "bfloat16")  # drops the float32 weights kept so far
        assert torch.equal(flow.nll(x), reference.nll(x))
        assert not torch.equal(flow.nll(x), exact)
        assert (flow.nll(x) - exact).abs().max() < 0.05 * exact.abs().max()
        set_conv_dtype(flow, None)
        assert torch.equal(flow.nll(x), exact)
    with pytest.raises(ValueError, match="conv_dtype"):
        set_conv_dtype(flow, "float16")


def test_conv_settings_and_set_conv_dtype_need_folded_subnets():
    flow = make_flow(kernel="plain")
    assert conv_settings(flow) == {"kernel": "plain", "algorithm": None, "dtype": None}
    with pytest.raises(ValueError, match="use_folded_convolutions"):
        set_conv_dtype(flow, "bfloat16")
    use_folded_convolutions(flow, "winograd", "bfloat16")
    assert conv_settings(flow) == {"kernel": "folded", "algorithm": "winograd", "dtype": "bfloat16"}
    attention = use_folded_convolutions(make_flow(kernel="plain", messages="cross_attention"), "winograd")
    assert conv_settings(attention) == {"kernel": "attention", "algorithm": "direct", "dtype": None}
    assert set(flow.state_dict()) == set(make_flow(kernel="plain").state_dict())  # kernels add no state
