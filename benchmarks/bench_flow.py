"""MultiViewFlow speed at the paper's shapes: the folded subnet kernel (multiflow_pl.speed; per-edge and
shared message weights, each convolution algorithm and dtype) against the subnets' plain per-view/per-edge
form (multiflow_pl.models.messages), side by side in one run.

A training step is forward + loss + backward + fused AdamW step (the config's optimizer) on noise-conditioned
features; an evaluation forward runs under ``torch.inference_mode`` without noise. The variants take turns,
round after round, so that load from other processes hits them alike; in its turn a variant runs one untimed
step, then ``--steps`` timed consecutive steps (as in a training loop), then an untimed and a timed evaluation
forward. The table gives the median wall time and the median CPU time of the process (CPU time / wall time >
threads means nothing; < threads means the process waited for a core). Before timing, the folded kernel is
checked against the plain form on the same input: in float64, where both are exact up to rounding (must agree
to 1e-5), and in float32 with float32 or bfloat16 convolutions (each path's distance from the float64 result,
printed). The machine (CPU model, ISA flags, threads, library versions) is printed with the table: compare the
ratios to the plain form across machines, not the seconds.

    PYTHONPATH=src python benchmarks/bench_flow.py                  # CPU, 2 threads, 2 rounds of 2 steps
    PYTHONPATH=src python benchmarks/bench_flow.py --reps 3 --variants plain fast fast_direct fast_winograd
    PYTHONPATH=src python benchmarks/bench_flow.py --device cuda --amp
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow_flops import flow_forward_flops

from multiflow_pl.models.flow import MultiViewFlow, noise_condition
from multiflow_pl.speed import conv_choice
from multiflow_pl.speed.folded_subnet import use_folded_convolutions
from multiflow_pl.utils.machine import cpu_flags, cpu_model

EQUIVALENCE_TOLERANCE = 1e-5
# name -> (message weights, conv algorithm (None: the plain subnets), conv dtype)
VARIANTS = {
    "plain": ("per_edge", None, None),
    "plain_shared": ("shared", None, None),
    "fast": ("per_edge", "auto", None),
    "fast_direct": ("per_edge", "direct", None),
    "fast_winograd": ("per_edge", "winograd", None),
    "fast_bf16": ("per_edge", "auto", "bfloat16"),
    "shared": ("shared", "auto", None),
    "shared_direct": ("shared", "direct", None),
    "shared_winograd": ("shared", "winograd", None),
    "shared_bf16": ("shared", "auto", "bfloat16"),
}
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def machine_info() -> str:
    """CPU model, ISA flags, threads and library versions, printed with every table."""
    present = cpu_flags()
    config = torch.__config__.show()
    onednn = re.search(r"MKL-DNN (v[\d.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    return (
        f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; ISA: "
        f"{' '.join(f for f in ISA_FLAGS if f in present) or 'none of ' + '/'.join(ISA_FLAGS)}; "
        f"torch {torch.__version__} threads {torch.get_num_threads()}, oneDNN "
        f"{onednn.group(1) if onednn else '-'}, MKL {mkl.group(1) if mkl else '-'}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, Python {platform.python_version()}"
    )


def build_flow(
    args: argparse.Namespace,
    message_weights: str,
    conv_algorithm: str | None = "auto",
    conv_dtype: str | None = None,
) -> MultiViewFlow:
    """The paper's flow (seeded) with message strengths 0.1, so that the cross-view messages are active; with
    the folded subnet kernel unless ``conv_algorithm`` is None (the plain subnets)."""
    torch.manual_seed(0)
    flow = MultiViewFlow(
        args.channels,
        args.views,
        args.graph,
        n_blocks=len(args.kernel_sizes),
        hidden=args.hidden,
        kernel_sizes=args.kernel_sizes,
        message_weights=message_weights,
    )
    if conv_algorithm is not None:
        use_folded_convolutions(flow, conv_algorithm, conv_dtype)
    with torch.no_grad():
        for coupling in flow.couplings:
            for net in (coupling.subnet_a, coupling.subnet_b):
                net.gamma.fill_(0.1)
    return flow


def features(
    args: argparse.Namespace, batch: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, ...]:
    """Noise-conditioned random features ``[batch, V, C, s, s]`` and their noise map."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, args.views, args.channels, args.size, args.size, generator=generator, dtype=dtype)
    x, cond = noise_condition(x, generator=generator)
    return x.to(args.device), cond.to(args.device)


def check_equivalence(args: argparse.Namespace) -> bool:
    """Folded vs plain z / logdet on one sample: float64 (checked), float32 and bf16 convolutions
    (reported)."""
    ok = True
    print("Equivalence, folded (fast) vs plain, one sample (max |difference|):")
    for message_weights in ("per_edge", "shared"):
        flow = build_flow(args, message_weights).to(args.device)
        flow_bf16 = build_flow(args, message_weights, conv_dtype="bfloat16").to(args.device)
        plain = build_flow(args, message_weights, conv_algorithm=None).to(args.device)  # same parameters
        x, cond = features(args, 1)
        with torch.inference_mode():
            results = {"fast": flow(x, cond), "plain": plain(x, cond), "fast bf16": flow_bf16(x, cond)}
            flow.double()
            plain.double()
            z64, logdet64 = flow(x.double(), cond.double())
            z64_plain, logdet64_plain = plain(x.double(), cond.double())
        diff64 = max((z64 - z64_plain).abs().max().item(), (logdet64 - logdet64_plain).abs().max().item())
        ok &= diff64 <= EQUIVALENCE_TOLERANCE
        print(
            f"  {message_weights:8s} float64: z {(z64 - z64_plain).abs().max():.1e}, "
            f"logdet {(logdet64 - logdet64_plain).abs().max():.1e} "
            f"({'ok' if diff64 <= EQUIVALENCE_TOLERANCE else 'FAILED'}, tolerance "
            f"{EQUIVALENCE_TOLERANCE:.0e}); |z| <= {z64.abs().max():.0f}, "
            f"|logdet| <= {logdet64.abs().max():.0f}"
        )
        distances = ", ".join(
            f"{name} z {(z - z64_plain).abs().max():.1e} logdet {(logdet - logdet64_plain).abs().max():.1e}"
            for name, (z, logdet) in results.items()
        )
        print(f"  {message_weights:8s} float32 distance from float64 plain: {distances}")
    return ok


def machine_rates(device: torch.device) -> None:
    """Sustained GFLOP/s of this machine on a big GEMM and on the flow's widest convolution (direct)."""
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    x = torch.randn(8, 320, 26, 26, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1520, 320, 3, 3, device=device)
    rates = []
    for flops, fn in ((2 * 2048**3, lambda: a @ b), (2 * 8 * 576 * 1520 * 320 * 9, lambda: F.conv2d(x, w))):
        fn()
        rates.append(flops / min(_timed(fn, device)[0] for _ in range(3)) / 1e9)
    a16, b16 = a.bfloat16(), b.bfloat16()
    a16 @ b16
    rates.append(2 * 2048**3 / min(_timed(lambda: a16 @ b16, device)[0] for _ in range(3)) / 1e9)
    print(
        f"Machine: GEMM 2048^3 {rates[0]:.0f} GFLOP/s (bf16 {rates[2]:.0f}), "
        f"conv 320->1520 3x3 on 8x26^2 {rates[1]:.0f} GFLOP/s"
    )


def _timed(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


@dataclass
class Variant:
    """One timed model with its optimizer and collected (wall, cpu) times."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    channels: int
    train: list[tuple[float, float]]
    evaluate: list[tuple[float, float]]

    def train_step(self, x: torch.Tensor, cond: torch.Tensor, amp: bool) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            z, logdet = self.model(x, cond)
            loss = ((0.5 * z.float().pow(2).sum(2) - logdet.float()) / self.channels).mean()
        loss.backward()
        self.optimizer.step()

    def eval_forward(self, x: torch.Tensor, amp: bool) -> None:
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            self.model(x, None)


def make_variants(args: argparse.Namespace) -> list[Variant]:
    variants = []
    for name in args.variants:
        message_weights, conv_algorithm, conv_dtype = VARIANTS[name]
        flow = build_flow(args, message_weights, conv_algorithm, conv_dtype).to(args.device)
        optimizer = torch.optim.AdamW(  # as conf/model/multiflow.yaml
            flow.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=1e-5, fused=True
        )
        variants.append(Variant(name, flow, optimizer, args.channels, [], []))
    return variants


def _median(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def report(args: argparse.Namespace, variants: list[Variant]) -> None:
    flops = {
        mw: flow_forward_flops(
            args.channels,
            args.views,
            args.graph,
            args.size,
            args.size,
            args.batch,
            args.hidden,
            args.kernel_sizes,
            mw,
        )
        for mw in ("per_edge", "shared")
    }
    plain = next((v for v in variants if v.name == "plain"), None)
    plain_train = _median(plain.train) if plain else None
    plain_eval = _median(plain.evaluate)[0] if plain else None
    print(
        f"\n{'variant':15s} {'train s':>8s} {'(cpu s)':>8s} {'eval s':>7s} {'(cpu s)':>8s} "
        f"{'train/plain':>11s} {'(cpu)':>6s} {'eval/plain':>10s} {'GFLOP/s':>8s}"
    )
    for v in variants:
        train_wall, train_cpu = _median(v.train)
        eval_wall, eval_cpu = _median(v.evaluate)
        rate = 3 * flops[VARIANTS[v.name][0]] / train_wall / 1e9
        vs_plain = (
            f"{train_wall / plain_train[0]:11.2f} {train_cpu / plain_train[1]:6.2f} "
            f"{eval_wall / plain_eval:10.2f}"
            if plain
            else f"{'':11s} {'':6s} {'':10s}"
        )
        print(
            f"{v.name:15s} {train_wall:8.2f} {train_cpu:8.2f} {eval_wall:7.2f} {eval_cpu:8.2f} {vs_plain} "
            f"{rate:8.1f}"
        )
    print(
        f"\nFLOPs per training step (about 3x forward): per_edge {3 * flops['per_edge'] / 1e9:.0f} G, "
        f"shared {3 * flops['shared'] / 1e9:.0f} G (direct convolution; GFLOP/s above = these / train s). "
        f"train/plain (cpu): the ratio of process CPU times, steadier than wall time on a shared machine "
        f"with 1 thread.\n{machine_info()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--reps", type=int, default=2, help="rounds over the variants (median of all)")
    parser.add_argument("--steps", type=int, default=2, help="timed consecutive training steps per round")
    parser.add_argument("--batch", type=int, default=8, help="samples per step")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--channels", type=int, default=304)
    parser.add_argument("--size", type=int, default=24, help="feature map side")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=[3, 3, 3, 3, 3, 5])
    parser.add_argument("--graph", default="top_ring")
    parser.add_argument("--variants", nargs="+", default=["plain", "fast", "shared"], choices=list(VARIANTS))
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (meant for CUDA)")
    parser.add_argument("--skip-check", action="store_true", help="skip the folded == plain check")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(
        f"MultiViewFlow {args.views} views x {args.channels} x {args.size}^2, batch {args.batch}, "
        f"{len(args.kernel_sizes)} blocks {args.kernel_sizes}, hidden {args.hidden}, graph {args.graph}; "
        f"device {args.device}, {torch.get_num_threads()} threads, amp {args.amp}\n{machine_info()}"
    )
    machine_rates(args.device)
    if not args.skip_check and not check_equivalence(args):
        raise SystemExit("the folded and plain subnets disagree")
    variants = make_variants(args)
    x, cond = features(args, args.batch)
    for rep in range(args.reps):
        for v in variants:
            # Untimed first step and forward: after the other variants ran, the allocator grows its pools
            # again (page faults), which a training loop pays once, not every step.
            v.train_step(x, cond, args.amp)
            for _ in range(args.steps):
                v.train.append(_timed(lambda v=v: v.train_step(x, cond, args.amp), args.device))
            v.eval_forward(x, args.amp)
            v.evaluate.append(_timed(lambda v=v: v.eval_forward(x, args.amp), args.device))
            print(
                f"  rep {rep + 1}/{args.reps} {v.name:15s} train "
                f"{' '.join(f'{t[0]:6.2f} ({t[1]:.2f} cpu)' for t in v.train[-args.steps :])} s "
                f"eval {v.evaluate[-1][0]:6.2f} ({v.evaluate[-1][1]:.2f} cpu) s",
                flush=True,
            )
    report(args, variants)
    chooser = conv_choice.default_chooser()
    for key, choice in chooser.choices.items():
        timings = ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in chooser.timings.get(key, {}).items())
        print(f"conv_algorithm=auto: {key} -> {choice} ({timings})")


if __name__ == "__main__":
    main()
