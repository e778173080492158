"""MultiViewFlow: invertibility, exact log-determinant, cross-view dependency, losses, size; each exactness
check on the plain subnets and on the folded kernel (tests/test_folded_subnet.py: the two agree), and on
the attention messages."""

import pytest
import torch
from helpers.flows import KERNELS, VARIANTS, make_flow
from torch.autograd.functional import jacobian

from multiflow_pl.models.attention import MESSAGE_KINDS
from multiflow_pl.models.coupling import soft_clamp
from multiflow_pl.models.flow import MultiViewFlow, noise_condition
from multiflow_pl.models.graph import GRAPH_NAMES, reachable, view_graph
from multiflow_pl.models.messages import CrossViewSubnet
from multiflow_pl.models.permutation import ViewPermutation
from multiflow_pl.speed.attention_subnet import BatchedAttentionKernel
from multiflow_pl.speed.folded_subnet import FoldedSubnetKernel, use_folded_convolutions

MODES = ("per_edge", "shared")
V = 5
PLAIN_GRAPHS = ("top_ring", "chain", "none")
"""Graphs the structural checks also run on the plain subnets (slow); on every graph the plain and folded
(or batched attention) forms agree (tests/test_folded_subnet.py)."""


def graph_kernels(graphs) -> list[tuple]:
    """``(graph, kernel, messages)`` cases: conv messages on every graph with the folded kernel, and on those
    of :data:`PLAIN_GRAPHS` with the plain subnets too; the attention messages (slower, and the same code on
    every graph) on :data:`PLAIN_GRAPHS` and ``directed`` with both."""
    cases = [(g, "folded", "conv") for g in graphs]
    cases += [(g, "plain", "conv") for g in graphs if g in PLAIN_GRAPHS]
    for messages in MESSAGE_KINDS[1:]:
        cases += [(g, k, messages) for g in graphs if g in (*PLAIN_GRAPHS, "directed") for k in KERNELS]
    return cases


def features(batch=2, channels=6, size=(5, 4), dtype=torch.float32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, V, channels, *size, generator=generator, dtype=dtype)
    return noise_condition(x, generator=generator)


def expected_parameters(
    channels, n_views, n_edges, mode, hidden, kernel_sizes, noise_channels, messages="conv"
):
    """Analytic parameter count of MultiViewFlow."""
    total = 0
    for k in kernel_sizes:
        for c_cond, c_out in (
            (channels - channels // 2, channels // 2),
            (channels // 2, channels - channels // 2),
        ):
            first = n_views * (hidden * (c_cond + noise_channels) * k * k + hidden)
            second = n_views * (2 * c_out * hidden * k * k + 2 * c_out)
            n_kernels = n_edges if mode == "per_edge" else min(n_edges, 1)
            message_convs = n_kernels * (2 * c_out * hidden * k * k + 2 * c_out)
            # attention: in-projection (q, k, v), out-projection, LayerNorm, per weight set
            attention = 0 if messages == "conv" else n_kernels * (4 * hidden * hidden + 6 * hidden)
            total += first + second + message_convs + attention + n_views  # + one output gate per view
    return total


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("graph", "kernel", "messages"), graph_kernels(GRAPH_NAMES))
def test_inverse_recovers_input(graph, mode, kernel, messages):
    for dtype, atol in ((torch.float32, 1e-4), (torch.float64, 1e-9)):
        flow = make_flow(graph, mode, dtype, kernel=kernel, messages=messages)
        x, cond = features(dtype=dtype)
        for c in (cond, None):
            z, _ = flow(x, c)
            assert not torch.allclose(z, x)
            torch.testing.assert_close(flow.inverse(z, c), x, atol=atol, rtol=0)


def _jacobian(flow, x, cond):
    """Full Jacobian of z w.r.t. x for B=1: ``[V*C*h*w, V*C*h*w]`` and the flow's logdet ``[V, h, w]``."""
    z_of_x = jacobian(lambda inp: flow(inp, cond)[0], x, vectorize=True)
    n = x.numel()
    return z_of_x.reshape(n, n), flow(x, cond)[1][0]


@pytest.mark.parametrize(
    ("graph", "mode", "kernel"),
    [
        ("top_ring", "per_edge", "folded"),
        ("chain", "per_edge", "folded"),
        ("full", "shared", "folded"),
        ("none", "shared", "folded"),
        ("top_ring", "per_edge", "plain"),
        ("none", "shared", "plain"),
    ],
)
@pytest.mark.parametrize("messages", MESSAGE_KINDS)
def test_summed_logdet_equals_jacobian_slogdet(graph, mode, kernel, messages):
    flow = make_flow(
        graph, mode, torch.float64, channels=4, kernel_sizes=(3, 5), kernel=kernel, messages=messages
    )
    x, cond = features(batch=1, channels=4, size=(3, 3), dtype=torch.float64)
    jac, logdet = _jacobian(flow, x, cond)
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    torch.testing.assert_close(logdet.sum(), logabsdet, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_per_pixel_logdet_with_1x1_kernels(kernel):
    """Conv messages only: attention reads every position of the sender, so its Jacobian is not per pixel
    (its log-determinant is checked whole above)."""
    flow = make_flow("top_ring", "per_edge", torch.float64, channels=4, kernel_sizes=(1, 1), kernel=kernel)
    x, cond = features(batch=1, channels=4, size=(3, 2), dtype=torch.float64)
    jac, logdet = _jacobian(flow, x, cond)
    jac = jac.reshape(V * 4, 6, V * 4, 6)  # (view, channel), pixel, (view, channel), pixel
    for p in range(6):
        block = jac[:, p, :, p]
        torch.testing.assert_close(
            logdet.flatten(1)[:, p].sum(), torch.linalg.slogdet(block)[1], atol=1e-9, rtol=0
        )
        off_pixel = torch.cat([jac[:, p, :, :p], jac[:, p, :, p + 1 :]], dim=-1)
        assert off_pixel.abs().max() == 0
    # Views are coupled at each pixel: the per-pixel block is not block-diagonal over views.
    assert jac[:4, 0, 4:8, 0].abs().max() > 0


def _directed_graph():
    adj = torch.zeros(V, V, dtype=torch.bool)
    adj[1, 0] = adj[2, 1] = adj[3, 2] = True  # 0 -> 1 -> 2 -> 3, view 4 alone
    return adj


@pytest.mark.parametrize("n_blocks", [1, 2])
@pytest.mark.parametrize(("graph", "kernel", "messages"), graph_kernels([*GRAPH_NAMES, "directed"]))
def test_view_dependency_follows_graph(graph, n_blocks, kernel, messages):
    adj = _directed_graph() if graph == "directed" else view_graph(graph, V)
    mode = "shared" if n_blocks == 2 else "per_edge"
    flow = make_flow(
        adj, mode, torch.float64, channels=4, kernel_sizes=(3,) * n_blocks, kernel=kernel, messages=messages
    )
    x, cond = features(batch=1, channels=4, size=(3, 3), dtype=torch.float64)
    # Two hops per block: step a reads neighbours' b, step b reads neighbours' new a.
    assert torch.equal(view_dependency(flow, x, cond), reachable(adj, 2 * n_blocks))


def view_dependency(flow: MultiViewFlow, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Which input views each output view depends on, ``[V (z view), V (x view)]`` bool: per z view, a
    seeded random projection of its Jacobian rows (one backward pass, not the whole Jacobian); a block of
    the Jacobian that is not structurally zero projects to non-zero with probability one."""
    x = x.clone().requires_grad_(True)
    z, _ = flow(x, cond)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for view in range(z.shape[1]):
        projection = torch.zeros_like(z)
        projection[:, view] = torch.randn(z[:, view].shape, generator=generator, dtype=z.dtype)
        (grad,) = torch.autograd.grad(z, x, projection, retain_graph=True)
        rows.append(grad.abs().sum(dim=(0, 2, 3, 4)) > 1e-12)
    return torch.stack(rows)


@pytest.mark.parametrize(("kernel", "messages"), VARIANTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("graph", GRAPH_NAMES)
def test_new_flow_is_its_channel_permutations(graph, mode, kernel, messages):
    """Gates start at 0 and scale the whole subnetwork output: every new coupling is the identity."""
    torch.manual_seed(0)
    flow = MultiViewFlow(
        6, V, graph, n_blocks=3, hidden=8, kernel_sizes=(3, 3, 5), message_weights=mode, messages=messages
    )
    if kernel == "folded":
        use_folded_convolutions(flow)
    assert torch.count_nonzero(flow.gammas()) == 0
    x, cond = features()
    expected = x
    for permutation in flow.permutations:
        expected = permutation(expected)
    for c in (cond, None):
        z, logdet = flow(x, c)
        assert torch.equal(z, expected)
        assert torch.equal(logdet, torch.zeros_like(logdet))


@pytest.mark.parametrize(("kernel", "messages"), VARIANTS)
@pytest.mark.parametrize("mode", MODES)
def test_silent_messages_give_independent_per_view_flows(mode, kernel, messages):
    linked = make_flow("top_ring", mode, torch.float64, kernel=kernel, messages=messages)
    independent = make_flow("none", mode, torch.float64, kernel=kernel, messages=messages)
    shared_keys = independent.state_dict().keys()
    independent.load_state_dict({k: v for k, v in linked.state_dict().items() if k in shared_keys})
    with torch.no_grad():
        for coupling in linked.couplings:
            for net in (coupling.subnet_a, coupling.subnet_b):
                net.message_weight.zero_()
                net.message_bias.zero_()
    x, cond = features(dtype=torch.float64)
    z, logdet = linked(x, cond)
    z_ind, logdet_ind = independent(x, cond)
    torch.testing.assert_close(z, z_ind, atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet, logdet_ind, atol=1e-12, rtol=0)
    x_changed = x.clone()
    x_changed[:, 2] += 1.0
    z_changed, _ = linked(x_changed, cond)
    others = [0, 1, 3, 4]
    assert torch.equal(z_changed[:, others], z[:, others])
    assert not torch.allclose(z_changed[:, 2], z[:, 2])


def test_nll_and_loss():
    flow = make_flow("top_ring", "per_edge")
    x, cond = features()
    z, logdet = flow(x, cond)
    nll = flow.nll(x, cond)
    assert nll.shape == (2, V, 5, 4)
    torch.testing.assert_close(nll, (0.5 * z.pow(2).sum(2) - logdet) / 6)
    torch.testing.assert_close(flow.loss(x, cond=cond), nll.mean())
    torch.testing.assert_close(flow.loss(x, torch.ones(2, V, 5, 4), cond), nll.mean())
    mask = torch.ones(2, V, 5, 4)
    mask[:, 1] = 0
    mask[0, :, :2] = 0
    torch.testing.assert_close(flow.loss(x, mask, cond), (mask * nll).mean())
    assert flow.loss(x, torch.zeros(2, V, 5, 4), cond) == 0
    soft = torch.full((2, V, 5, 4), 0.5)
    torch.testing.assert_close(
        flow.loss(x, soft, cond), ((0.125 * z.pow(2).sum(2) - 0.5 * logdet) / 6).mean()
    )
    with pytest.raises(ValueError, match="mask"):
        flow.loss(x, torch.ones(2, V, 4, 4))


def test_soft_clamp_bounds_and_identity_near_zero():
    s = torch.tensor([-1e6, -0.01, 0.0, 0.01, 1e6])
    out = soft_clamp(s, 1.9)
    assert out.abs().max() < 1.9 * 0.636 * torch.pi / 2 + 1e-6
    torch.testing.assert_close(out[1:4], 0.636 * s[1:4], atol=1e-6, rtol=1e-3)


def test_permutation_is_seeded_per_view_and_invertible():
    perm = ViewPermutation(12, V, torch.Generator().manual_seed(3))
    again = ViewPermutation(12, V, torch.Generator().manual_seed(3))
    other = ViewPermutation(12, V, torch.Generator().manual_seed(4))
    assert torch.equal(perm.perm, again.perm) and not torch.equal(perm.perm, other.perm)
    assert len({tuple(p.tolist()) for p in perm.perm}) == V
    x = torch.randn(2, V, 12, 3, 3)
    y = perm(x)
    assert torch.equal(y[:, 3], x[:, 3, perm.perm[3]])
    assert torch.equal(perm.inverse(y), x)
    assert {"perm", "inverse_perm"} <= set(perm.state_dict())
    pixels = x.permute(0, 3, 4, 1, 2)  # pixel-major [B, h, w, V, C], a strided view as the flow passes it
    assert torch.equal(perm(pixels, view_dim=3), y.permute(0, 3, 4, 1, 2))
    assert torch.equal(perm.inverse(perm(pixels, view_dim=3), view_dim=3), pixels)


def test_noise_condition_is_shared_over_views_and_channels():
    x = torch.zeros(3, V, 4, 64, 64)
    noisy, cond = noise_condition(x, generator=torch.Generator().manual_seed(0))
    assert cond.shape == (3, 1, 1, 64, 64)
    torch.testing.assert_close(noisy, cond.expand_as(x) / 20.0)
    assert abs(noisy.std().item() - 0.15) < 0.01
    again, _ = noise_condition(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


def test_gammas_accessor_and_input_validation():
    flow = make_flow("top_ring", "per_edge")
    assert flow.gammas().shape == (2, 2, V) and (flow.gammas() > 0).all()
    assert (make_flow("none").gammas() > 0).all()
    x, cond = features()
    with pytest.raises(ValueError, match="Expected features"):
        flow(x[:, :4])
    with pytest.raises(ValueError, match="Expected cond"):
        flow(x, cond[:, :, :, :2])
    with pytest.raises(ValueError, match="noise_channels=0"):
        make_flow(noise_channels=0)(x, cond)
    with pytest.raises(ValueError, match="self loops"):
        MultiViewFlow(6, V, torch.ones(V, V, dtype=torch.bool), n_blocks=1, kernel_sizes=(3,))
    with pytest.raises(ValueError, match="one kernel size per block"):
        MultiViewFlow(6, V, "ring", n_blocks=2, kernel_sizes=(3,))


@pytest.mark.parametrize("messages", MESSAGE_KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("graph", "noise_channels"), [("top_ring", 1), ("chain", 2), ("none", 0)])
def test_parameter_count_formula(graph, mode, noise_channels, messages):
    flow = make_flow(
        graph, mode, channels=7, kernel_sizes=(3, 1), noise_channels=noise_channels, messages=messages
    )
    n_edges = int(view_graph(graph, V).sum())
    expected = expected_parameters(7, V, n_edges, mode, 8, (3, 1), noise_channels, messages)
    assert flow.n_parameters == expected


def test_parameter_count_at_paper_settings():
    expected = expected_parameters(304, 5, 16, "per_edge", 64, (3, 3, 3, 3, 3, 5), 1)
    assert 63.5e6 < expected < 64.5e6
    assert MultiViewFlow(304, 5, "top_ring").n_parameters == expected


def _receiver_message(messages, mode, u_receiver):
    """Output of view 1 of a two-view subnet whose only edge is 0 -> 1, with view 1's own path silenced:
    the message M_{0->1} alone, for a given conditioning half of the receiver ``[1, 3, 3, Cc]``."""
    torch.manual_seed(0)
    adjacency = torch.tensor([[False, False], [True, False]])
    subnet = CrossViewSubnet(3, 2, adjacency, 3, hidden=8, message_weights=mode, messages=messages).double()
    with torch.no_grad():
        subnet.gamma.fill_(1.0)
        subnet.self_weight[1].zero_()
        subnet.self_bias[1].zero_()
    u_sender = torch.randn(1, 3, 3, 1, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s_raw, t = subnet(torch.cat([u_sender, u_receiver], dim=3))
    return torch.cat([s_raw, t], dim=-1)[:, :, :, 1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("messages", MESSAGE_KINDS)
def test_only_cross_attention_messages_depend_on_the_receiver(messages, mode):
    generator = torch.Generator().manual_seed(2)
    receiver, other = torch.randn(2, 1, 3, 3, 1, 3, generator=generator, dtype=torch.float64)
    message = _receiver_message(messages, mode, receiver)
    assert message.abs().max() > 0
    changed = _receiver_message(messages, mode, other)
    if messages == "cross_attention":
        assert not torch.allclose(changed, message)
    else:  # conv and self attention read the sender alone
        torch.testing.assert_close(changed, message, atol=1e-14, rtol=0)


def test_conv_messages_keep_their_state_dict_keys():
    """Checkpoints of conv-message flows load: the attention variants only add their own keys."""
    keys = {key.split(".", 3)[-1] for key in make_flow(kernel="plain").state_dict() if ".subnet_a." in key}
    assert keys == {
        "first_weight",
        "first_bias",
        "self_weight",
        "self_bias",
        "gamma",
        "message_weight",
        "message_bias",
    }
    conv = set(make_flow(kernel="plain").state_dict())
    attention = set(make_flow(kernel="plain", messages="cross_attention").state_dict())
    assert conv < attention
    assert {key.split(".", 3)[-1] for key in attention - conv} == {
        f"attention.{name}"
        for name in ("in_weight", "in_bias", "out_weight", "out_bias", "norm_weight", "norm_bias")
    }


def test_attention_subnets_get_the_batched_kernel():
    flow = make_flow("top_ring", messages="self_attention")
    kernels = [m.kernel for m in flow.modules() if isinstance(m, CrossViewSubnet)]
    assert kernels and all(isinstance(kernel, BatchedAttentionKernel) for kernel in kernels)
    with pytest.raises(ValueError, match="conv messages only"):
        FoldedSubnetKernel(flow.couplings[0].subnet_a)
    with pytest.raises(ValueError, match="conv ones"):
        BatchedAttentionKernel(make_flow(kernel="plain").couplings[0].subnet_a)
    with pytest.raises(ValueError, match="messages must be one of"):
        make_flow(messages="attention")


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_flow_exports_for_any_batch_size(kernel):
    """Both forms of attention subnets trace without reading tensors (torch.export)."""
    flow = make_flow("top_ring", messages="cross_attention", kernel=kernel).eval()
    x, _ = features()
    batch = torch.export.Dim("batch", min=1, max=64)
    with torch.no_grad():
        program = torch.export.export(flow, (x,), dynamic_shapes=({0: batch},), strict=False)
        other, _ = features(batch=3, seed=5)
        torch.testing.assert_close(program.module()(other)[0], flow(other)[0])
