"""A deliberately naive re-expression of MultiViewFlow, as the reference code computes it.

Python loops over views and directed edges, one small ``F.conv2d`` per view subnetwork and per edge message,
reading the SAME parameter tensors as a given fast :class:`MultiViewFlow` (slices of its parameters, so
gradients flow to them). Used to check the batched fast path and to benchmark against it:

    PYTHONPATH=src python benchmarks/naive_flow.py --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from multiflow_pl.models.coupling import soft_clamp
from multiflow_pl.models.flow import MultiViewFlow, noise_condition
from multiflow_pl.models.fusion import CrossViewSubnet


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Replicate-padded 'same' convolution of ``x [B, C, h, w]``."""
    p = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="replicate") if p else x, weight, bias)


def _subnet(net: CrossViewSubnet, u: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive subnetwork: ``u [B, V, Cc, h, w]``, ``cond [B, 1|V, n, h, w]`` -> ``(log_s_raw, t)`` per view."""
    hidden = []
    for i in range(net.n_views):
        inputs = torch.cat([u[:, i], cond[:, i if cond.shape[1] > 1 else 0]], dim=1)
        hidden.append(F.relu(_conv(inputs, net.first_weight[i], net.first_bias[i])))
    outputs = []
    for i in range(net.n_views):
        out = _conv(hidden[i], net.self_weight[i], net.self_bias[i])
        messages = []
        for e, (target, source) in enumerate(net.edges.tolist()):
            if target != i:
                continue
            k = e if net.message_weights == "per_edge" else 0
            messages.append(_conv(hidden[source], net.message_weight[k], net.message_bias[k]))
        if messages:
            out = out + torch.stack(messages).mean(0)
        outputs.append(net.gamma[i] * out)
    out = torch.stack(outputs, dim=1)
    return out[:, :, : net.out_channels], out[:, :, net.out_channels :]


class NaiveMultiViewFlow(nn.Module):
    """Loop-based twin of ``fast``; ``forward(x, cond=None) -> (z [B, V, C, h, w], logdet [B, V, h, w])``."""

    def __init__(self, fast: MultiViewFlow) -> None:
        super().__init__()
        self.fast = fast

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        fast = self.fast
        batch, n_views, _, height, width = x.shape
        if cond is None:  # the reference feeds an all-zero noise channel at test time
            cond = x.new_zeros(batch, 1, fast.noise_channels, height, width)
        logdet = x.new_zeros(batch, n_views, height, width)
        for permutation, coupling in zip(fast.permutations, fast.couplings, strict=True):
            x = torch.stack([x[:, v, permutation.perm[v]] for v in range(n_views)], dim=1)
            a, b = x[:, :, : coupling.split], x[:, :, coupling.split :]
            s_raw, t = _subnet(coupling.subnet_a, b, cond)
            log_s_a = soft_clamp(s_raw, coupling.clamp)
            a = a * torch.exp(log_s_a) + t
            s_raw, t = _subnet(coupling.subnet_b, a, cond)
            log_s_b = soft_clamp(s_raw, coupling.clamp)
            b = b * torch.exp(log_s_b) + t
            x = torch.cat([a, b], dim=2)
            logdet = logdet + log_s_a.sum(2) + log_s_b.sum(2)
        return x, logdet


def _time_train_step(model: nn.Module, x: torch.Tensor, cond: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward of ``0.5 z^2 - logdet``."""
    times = []
    for _ in range(repeats + 1):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        z, logdet = model(x, cond)
        (0.5 * z.pow(2).sum(2) - logdet).mean().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description="Time the batched MultiViewFlow against its naive twin.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--graph", default="top_ring")
    parser.add_argument("--message-weights", default="per_edge", choices=["per_edge", "shared"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    fast = MultiViewFlow(304, 5, args.graph, message_weights=args.message_weights).to(args.device)
    with torch.no_grad():
        for coupling in fast.couplings:
            for net in (coupling.subnet_a, coupling.subnet_b):
                net.gamma.fill_(0.1)
    x = torch.randn(args.batch, 5, 304, args.size, args.size, device=args.device)
    x, cond = noise_condition(x)
    naive = NaiveMultiViewFlow(fast)
    with torch.no_grad():
        z_fast, ld_fast = fast(x, cond)
        z_naive, ld_naive = naive(x, cond)
    t_fast = _time_train_step(fast, x, cond, args.repeats)
    t_naive = _time_train_step(naive, x, cond, args.repeats)
    z_diff, logdet_diff = (z_fast - z_naive).abs().max(), (ld_fast - ld_naive).abs().max()
    print(f"params {fast.n_parameters:,}  device {args.device}  batch {args.batch}x5 views {args.size}^2")
    print(f"max |z diff| {z_diff:.2e}  max |logdet diff| {logdet_diff:.2e}")
    print(f"train step: fast {t_fast * 1e3:.1f} ms, naive {t_naive * 1e3:.1f} ms ({t_naive / t_fast:.2f}x)")


if __name__ == "__main__":
    main()
