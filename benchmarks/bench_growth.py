"""How the flow's training step grows with the number of views and the feature-map size, next to its FLOPs.

For every (views, map side) on the grid, a MultiViewFlow with the paper's other settings (304 channels,
6 blocks, hidden 64, top_ring graph, per-edge messages, noise conditioning) runs warm-up + ``--reps``
training steps (forward, loss, backward, AdamW); the table gives the median step time, the analytic FLOPs
of a step (3x the forward pass's direct-convolution FLOPs, see flow_flops.py) and both relative to the
paper's point (5 views, 24 x 24). If time grows as the FLOPs do, the last two columns agree.

    PYTHONPATH=src python benchmarks/bench_growth.py
    PYTHONPATH=src python benchmarks/bench_growth.py --batch 8 --reps 3 --conv-algorithm direct
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow_flops import flow_forward_flops

from multiflow_pl.models.flow import MultiViewFlow, noise_condition
from multiflow_pl.speed.folded_subnet import use_folded_convolutions

CHANNELS, GRAPH, KERNEL_SIZES = 304, "top_ring", (3, 3, 3, 3, 3, 5)


def step_time(n_views: int, side: int, args: argparse.Namespace) -> float:
    """Median seconds of a training step after one warm-up step."""
    torch.manual_seed(0)
    flow = MultiViewFlow(CHANNELS, n_views, GRAPH, message_weights=args.message_weights)
    flow = use_folded_convolutions(flow, args.conv_algorithm).to(args.device)
    with torch.no_grad():
        for coupling in flow.couplings:
            for net in (coupling.subnet_a, coupling.subnet_b):
                net.gamma.fill_(0.1)
    optimizer = torch.optim.AdamW(flow.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=1e-5)
    x, cond = noise_condition(torch.randn(args.batch, n_views, CHANNELS, side, side, device=args.device))
    times = []
    for _ in range(args.reps + 1):
        if args.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        flow.loss(x, cond=cond).backward()
        optimizer.step()
        if args.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, nargs="+", default=[3, 5, 8])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 24, 48])
    parser.add_argument("--batch", type=int, default=2, help="samples per step (FLOPs scale linearly)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--message-weights", default="per_edge", choices=["per_edge", "shared"])
    parser.add_argument("--conv-algorithm", default="auto", choices=["auto", "winograd", "direct"])
    args = parser.parse_args()
    args.device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(
        f"Training step of MultiViewFlow ({CHANNELS} channels, 6 blocks, hidden 64, {GRAPH}, "
        f"{args.message_weights}, conv {args.conv_algorithm}), batch {args.batch}, device {args.device}, "
        f"{torch.get_num_threads()} threads, median of {args.reps} after a warm-up step"
    )
    rows = []
    for n_views in args.views:
        for side in args.sizes:
            flops = 3 * flow_forward_flops(
                CHANNELS, n_views, GRAPH, side, side, args.batch, message_weights=args.message_weights
            )
            seconds = step_time(n_views, side, args)
            rows.append((n_views, side, flops, seconds))
            print(f"  {n_views} views {side:2d}^2: {seconds:7.2f} s", flush=True)
    ref = next(((f, s) for v, side, f, s in rows if v == 5 and side == 24), rows[0][2:])
    header = ("views", "side", "GFLOP", "step s", "GFLOP/s", "FLOPs rel", "time rel")
    print("\n{:>5s} {:>4s} {:>8s} {:>8s} {:>8s} {:>9s} {:>8s}".format(*header))
    for n_views, side, flops, seconds in rows:
        print(
            f"{n_views:5d} {side:4d} {flops / 1e9:8.1f} {seconds:8.2f} {flops / seconds / 1e9:8.1f} "
            f"{flops / ref[0]:9.2f} {seconds / ref[1]:8.2f}"
        )
    print("\n(rel = relative to 5 views at 24 x 24; FLOPs of direct convolution, whatever algorithm runs.)")


if __name__ == "__main__":
    main()
