"""The batched attention kernel (multiflow_pl.speed): the same function as the plain, per-edge attention
subnets, with any graph, weight mode, kind and noise input, gradients included."""

import pytest
import torch
from helpers.flows import make_flow, plain
from test_flow import MODES, features

from multiflow_pl.models.graph import GRAPH_NAMES

KINDS = ("cross_attention", "self_attention")
V = 5


@pytest.mark.parametrize("messages", KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("graph", GRAPH_NAMES)
def test_batched_matches_plain_to_round_off_in_float64(graph, mode, messages):
    flow = make_flow(graph, mode, torch.float64, kernel_sizes=(3, 5), messages=messages)
    x, cond = features(dtype=torch.float64)
    for c in (cond, None):
        z, logdet = flow(x, c)
        with plain(flow):
            z_plain, logdet_plain = flow(x, c)
        torch.testing.assert_close(z, z_plain, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(logdet, logdet_plain, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("messages", KINDS)
@pytest.mark.parametrize("noise_channels", [0, 2])
def test_batched_matches_plain_with_other_noise_channels(noise_channels, messages):
    flow = make_flow("ring", "per_edge", noise_channels=noise_channels, messages=messages)
    x, _ = features()
    cond = torch.randn(2, V, noise_channels, 5, 4) if noise_channels else None  # per-view noise maps
    z, logdet = flow(x, cond)
    with plain(flow):
        z_plain, logdet_plain = flow(x, cond)
    torch.testing.assert_close(z, z_plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logdet, logdet_plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_batched_gradients_match_plain(mode):
    flow = make_flow("top_ring", mode, torch.float64, messages="cross_attention")
    x, cond = features(dtype=torch.float64)
    flow.loss(x, cond=cond).backward()
    batched = {name: p.grad.clone() for name, p in flow.named_parameters()}
    flow.zero_grad()
    with plain(flow):
        flow.loss(x, cond=cond).backward()
    for name, p in flow.named_parameters():
        torch.testing.assert_close(batched[name], p.grad, atol=1e-12, rtol=1e-10, msg=name)
    assert batched["couplings.0.subnet_a.attention.in_weight"].abs().max() > 0
