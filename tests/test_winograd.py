"""Winograd convolution: exact transforms, results and gradients of F.conv2d, and the flow built on it."""

import pytest
import torch
import torch.nn.functional as F
from helpers.flows import make_flow, plain
from helpers.runs import compose_config
from torch.autograd.functional import jacobian

from multiflow_pl.models.flow import noise_condition
from multiflow_pl.models.graph import view_graph
from multiflow_pl.models.messages import CrossViewSubnet
from multiflow_pl.pipeline import build_module
from multiflow_pl.speed import winograd
from multiflow_pl.speed.folded_subnet import FoldedSubnetKernel, conv_settings, use_folded_convolutions

V = 5


@pytest.mark.parametrize(("m", "r"), [(2, 3), (4, 3), (6, 3), (2, 5), (4, 5)])
def test_transforms_compute_correlation(m, r):
    output_t, kernel, data_t = winograd.winograd_matrices(m, r)
    assert output_t.shape == (m, m + r - 1) and kernel.shape == (m + r - 1, r)
    generator = torch.Generator().manual_seed(m * 10 + r)
    g = torch.randn(r, 4, dtype=torch.float64, generator=generator)
    d = torch.randn(m + r - 1, 4, dtype=torch.float64, generator=generator)
    expected = torch.stack([(g * d[i : i + r]).sum(0) for i in range(m)])
    torch.testing.assert_close(output_t @ ((kernel @ g) * (data_t @ d)), expected, atol=1e-12, rtol=0)
    assert torch.equal(data_t, data_t.round())  # integer data transform: exact in floating point


def _conv_inputs(batch, c_in, c_out, groups, r, size, dtype, channels_last, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c_in * groups, size[0] + r - 1, size[1] + r - 1, generator=generator, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out * groups, c_in, r, r, generator=generator, dtype=dtype) / (c_in * r * r) ** 0.5
    bias = torch.randn(c_out * groups, generator=generator, dtype=dtype)
    return x, weight, bias


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(
    ("r", "groups", "size"), [(3, 1, (8, 8)), (3, 3, (7, 5)), (5, 2, (6, 9)), (5, 1, (1, 2))]
)
def test_matches_conv2d(r, groups, size, channels_last):
    x, weight, bias = _conv_inputs(2, 6, 5, groups, r, size, torch.float64, channels_last)
    out = winograd.winograd_conv2d(x, weight, bias, groups)
    assert out.shape == (2, 5 * groups, *size)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, groups=groups), atol=1e-11, rtol=0)
    torch.testing.assert_close(
        winograd.winograd_conv2d(x, weight, None, groups),
        F.conv2d(x, weight, groups=groups),
        atol=1e-11,
        rtol=0,
    )


@pytest.mark.parametrize("r", [3, 5])
def test_float32_error_is_close_to_direct_convolution(r):
    x, weight, bias = _conv_inputs(2, 64, 48, 1, r, (12, 12), torch.float32, True, seed=3)
    exact = F.conv2d(x.double(), weight.double(), bias.double())
    direct = (F.conv2d(x, weight, bias) - exact).pow(2).mean().sqrt()
    fast = (winograd.winograd_conv2d(x, weight, bias) - exact).pow(2).mean().sqrt()
    assert fast < 4 * direct


def test_gradients_match_conv2d():
    x, weight, bias = _conv_inputs(2, 4, 3, 2, 3, (5, 6), torch.float64, True)
    grad_out = torch.randn(2, 6, 5, 6, dtype=torch.float64)
    grads = []
    for conv in (winograd.winograd_conv2d, lambda *a: F.conv2d(*a[:3], groups=a[3])):
        inputs = [t.detach().requires_grad_() for t in (x, weight, bias)]
        conv(*inputs, 2).backward(grad_out)
        grads.append([t.grad for t in inputs])
    for fast, reference in zip(*grads, strict=True):
        torch.testing.assert_close(fast, reference, atol=1e-10, rtol=0)


def test_chunking_over_positions_gives_the_same_result(monkeypatch):
    x, weight, bias = _conv_inputs(1, 8, 8, 1, 3, (8, 8), torch.float64, True)
    whole = winograd.winograd_conv2d(x, weight, bias)
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 3 * 8 * 8 * 8)  # 3 positions' weights per chunk
    chunks = winograd._position_chunks(36, 64, 4 * 8, 8)
    assert len(chunks) == 12 and [c.start for c in chunks[1:]] == [c.stop for c in chunks[:-1]]
    assert chunks[0].start == 0 and chunks[-1].stop == 36
    torch.testing.assert_close(winograd.winograd_conv2d(x, weight, bias), whole, atol=1e-12, rtol=0)


def _flow(graph, mode, algorithm, dtype=torch.float64, channels=6):
    return make_flow(graph, mode, dtype, channels, kernel_sizes=(3, 5), conv_algorithm=algorithm)


def _features(dtype=torch.float64, channels=6, size=(5, 7), batch=2):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, V, channels, *size, generator=generator, dtype=dtype)
    return noise_condition(x, generator=generator)


@pytest.mark.parametrize("mode", ["per_edge", "shared"])
@pytest.mark.parametrize("graph", ["top_ring", "ring", "none"])
def test_winograd_flow_matches_plain_and_inverts(graph, mode):
    flow = _flow(graph, mode, "winograd")
    x, cond = _features()
    for c in (cond, None):
        z, logdet = flow(x, c)
        with plain(flow):
            z_plain, logdet_plain = flow(x, c)
        torch.testing.assert_close(z, z_plain, atol=1e-10, rtol=0)
        torch.testing.assert_close(logdet, logdet_plain, atol=1e-10, rtol=0)
        torch.testing.assert_close(flow.inverse(z, c), x, atol=1e-9, rtol=0)


def test_winograd_flow_logdet_equals_jacobian():
    flow = _flow("top_ring", "per_edge", "winograd", channels=4)
    x, cond = _features(channels=4, size=(3, 3), batch=1)
    jac = jacobian(lambda inp: flow(inp, cond)[0], x, vectorize=True).reshape(x.numel(), x.numel())
    torch.testing.assert_close(flow(x, cond)[1].sum(), torch.linalg.slogdet(jac)[1], atol=1e-8, rtol=0)


@pytest.mark.parametrize("mode", ["per_edge", "shared"])
def test_winograd_flow_gradients_match_direct(mode):
    grads = []
    for algorithm in ("winograd", "direct"):
        flow = _flow("chain", mode, algorithm)
        x, cond = _features()
        z, logdet = flow(x, cond)
        (0.5 * z.pow(2).sum(2) - logdet).mean().backward()
        grads.append({name: p.grad for name, p in flow.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], atol=1e-10, rtol=1e-8, msg=name)


def test_forced_winograd_falls_back_to_direct_where_unsupported(monkeypatch):
    calls = []
    real = winograd.winograd_conv2d
    monkeypatch.setattr(winograd, "winograd_conv2d", lambda *a: calls.append(a[1].shape) or real(*a))
    u = torch.randn(1, 6, 6, V, 4)
    use_folded_convolutions(CrossViewSubnet(4, 4, view_graph("top_ring", V), 7, hidden=8), "winograd")(u)
    assert calls == []
    use_folded_convolutions(CrossViewSubnet(4, 4, view_graph("top_ring", V), 3, hidden=8), "winograd")(u)
    # first conv; then the folded per-edge conv, one per in-degree: the top view reads all 5 views, the
    # 4 side views 4 each (2 * 4 outputs per view)
    assert calls == [(V * 8, 4, 3, 3), (8, V * 8, 3, 3), (4 * 8, 4 * 8, 3, 3)]
    with pytest.raises(ValueError, match="conv_algorithm"):
        FoldedSubnetKernel(CrossViewSubnet(4, 4, view_graph("ring", V), 3), "fft")


def test_flow_outputs_are_contiguous_in_the_public_layout():
    flow = _flow("top_ring", "per_edge", "auto", torch.float32)
    x, cond = _features(torch.float32)
    z, logdet = flow(x, cond)
    assert z.shape == x.shape and z.is_contiguous() and logdet.is_contiguous()
    assert flow.inverse(z, cond).is_contiguous()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], ("folded", "direct", None)),  # the default: the same seed gives the same numbers
        (["trainer.benchmark=true"], ("folded", "auto", None)),  # timed choices are opt-in, as cuDNN's
        (["trainer.benchmark=true", "model.convolutions.algorithm=direct"], ("folded", "direct", None)),
        (
            ["model.convolutions.algorithm=winograd", "model.convolutions.dtype=bfloat16"],
            ("folded", "winograd", "bfloat16"),
        ),
        (["model.convolutions.kernel=plain"], ("plain", None, None)),
    ],
)
def test_convolutions_are_config_keys(tmp_path, overrides, expected):
    from multiflow_pl.models.backbone import FeatureExtractor

    cfg = compose_config("train", tmp_path, ["backbone=resnet18", *overrides])
    module = build_module(cfg, FeatureExtractor("resnet18", ["layer1"], input_size=32), V)
    assert tuple(conv_settings(module.model.flow).values()) == expected
