"""Peak memory and time of the binned vs the exact pixel metrics as the number of test maps grows.

Each (mode, number of maps) runs in a fresh process that streams random score maps with blob masks
through ``AnomalyMetrics.update`` batch by batch and then calls ``compute``. Peak memory is the growth of
the process's peak resident set (Linux VmHWM, reset after start-up) over its resident set after start-up:
tensor memory is invisible to tracemalloc, so RSS is the honest measure. ``state`` is the size of the
metric's states (``metric_state``: tensors and lists of tensors).

    PYTHONPATH=src python benchmarks/bench_metrics_memory.py --n-maps 50 100 200 500 --size 256
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import torch

from multiflow_pl.evaluation.metrics import AnomalyMetrics

MIB = 2**20
VIEWS = 5


def _proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status (Linux only)")


def _reset_peak_rss() -> None:
    """Make VmHWM restart from the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _batch(start: int, batch: int, size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Maps [B, size, size] of images start..start+B-1 (5 views per sample): Gaussian noise, shifted up
    inside elliptic blob masks on the even views of odd samples.

    Returns image scores [B], labels [B], maps, masks; deterministic per (seed, start).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
    coords = torch.arange(size, dtype=torch.float32)
    masks = torch.zeros(batch, size, size, dtype=torch.bool)
    for image in range(batch):
        if ((start + image) // VIEWS) % 2 == 0 or image % 2 == 1:
            continue
        cy, cx = (torch.rand(2, generator=generator) * size).tolist()
        ry, rx = (torch.rand(2, generator=generator) * size / 8 + 2).tolist()
        masks[image] = ((coords[:, None] - cy) / ry) ** 2 + ((coords[None, :] - cx) / rx) ** 2 <= 1
    maps = torch.randn(batch, size, size, generator=generator) + 1.5 * masks
    return maps.amax(dim=(1, 2)), masks.any(dim=(1, 2)).long(), maps, masks


def _measure(mode: str, n_maps: int, size: int, batch: int, n_bins: int, seed: int) -> dict[str, float]:
    """Stream ``n_maps`` maps through one AnomalyMetrics; runs in its own process."""
    torch.set_num_threads(1)
    metrics = AnomalyMetrics(mode=mode, n_bins=n_bins)
    baseline_kib = _proc_status_kib("VmRSS")
    _reset_peak_rss()
    update_seconds = 0.0
    for start in range(0, n_maps, batch):
        scores, labels, maps, masks = _batch(start, min(batch, n_maps - start), size, seed)
        keys = [f"sample_{(start + i) // VIEWS:05d}" for i in range(scores.numel())]
        began = time.perf_counter()
        metrics.update(scores, labels, keys, maps, masks)
        update_seconds += time.perf_counter() - began
    began = time.perf_counter()
    results = metrics.compute()
    compute_seconds = time.perf_counter() - began
    state_bytes = sum(
        sum(part.nbytes for part in state) if isinstance(state, list) else state.nbytes
        for state in metrics.metric_state.values()
    )
    return {
        "update_s": update_seconds,
        "compute_s": compute_seconds,
        "peak_mib": (_proc_status_kib("VmHWM") - baseline_kib) / 1024,
        "state_mib": state_bytes / MIB,
        "pixel_aupro": results["pixel_aupro"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-maps", type=int, nargs="+", default=[50, 100, 200, 500], help="test map counts")
    parser.add_argument("--size", type=int, default=256, help="map height and width")
    parser.add_argument("--batch", type=int, default=40, help="maps per update call (8 samples x 5 views)")
    parser.add_argument("--n-bins", type=int, default=2**16, help="histogram bins of the binned mode")
    parser.add_argument("--modes", nargs="+", default=["binned", "exact"], choices=["binned", "exact"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")  # a fresh process per row: peak RSS of that row only
    header = f"{'mode':<7} {'maps':>6} {'Mpixels':>8} {'update s':>9} {'compute s':>10} {'peak RSS MiB':>13}"
    header += f" {'state MiB':>10} {'pixel_aupro':>12}"
    print(f"AnomalyMetrics memory, {args.size}x{args.size} maps, batch {args.batch}, n_bins {args.n_bins}")
    print(header)
    print("-" * len(header))
    peaks: dict[str, list[float]] = {}
    for mode in args.modes:
        for n_maps in args.n_maps:
            with context.Pool(1) as pool:
                row = pool.apply(_measure, (mode, n_maps, args.size, args.batch, args.n_bins, args.seed))
            peaks.setdefault(mode, []).append(row["peak_mib"])
            print(
                f"{mode:<7} {n_maps:>6} {n_maps * args.size**2 / 1e6:>8.1f} {row['update_s']:>9.2f}"
                f" {row['compute_s']:>10.2f} {row['peak_mib']:>13.1f} {row['state_mib']:>10.2f}"
                f" {row['pixel_aupro']:>12.6f}"
            )
    for mode, values in peaks.items():
        growth = values[-1] / max(values[0], 1e-9)
        print(f"{mode}: peak RSS growth {args.n_maps[0]} -> {args.n_maps[-1]} maps: x{growth:.2f}")


if __name__ == "__main__":
    main()
