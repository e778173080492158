"""Does the step-based stopping rule train long enough at every data size? The demo at several numbers of
training samples, each trained by the rule (``schedule=steps``) and by 3x the steps the rule took (no
early stop): if 3x buys much, the rule stops too early at that size.

    PYTHONPATH=src python benchmarks/schedule_study.py --root /tmp/schedule --sizes 30 60 200 --seeds 0 1 2

Each run is the real pipeline (``benchmarks/demo_search.py``'s ``run_setting``); data are rendered per size
under ``root/data/n<size>``. Prints one row per (size, seed, setting): steps trained, sample AUROC, the
cross-view defects' sample AUROC (XV), the output gates' mean |gamma| at the end, and wall time. At full size
(3 sizes x 3 seeds, 18 demo runs) it takes hours on a CPU; ``--common`` adds overrides to every run (e.g. a
tiny backbone and image size to try the script).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import torch
from demo_search import run_setting


def trained_steps_and_gates(run_dir: Path) -> tuple[int, float]:
    """Steps trained and the mean |gamma| of all output gates, from the run's last checkpoint."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    gammas = [value.abs() for key, value in checkpoint["state_dict"].items() if key.endswith(".gamma")]
    return int(checkpoint["global_step"]), float(torch.cat(gammas).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="data, cache and run folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 60, 200], help="normal training samples")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--factor", type=int, default=3, help="the long run trains this many times the steps")
    parser.add_argument("--common", default="", help="overrides added to every run")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            data = [
                f"data.root={args.root / 'data' / f'n{size}'}",
                "data.generate.create=true",
                f"data.generate.n_train={size}",
                f"seed={seed}",
                "schedule=steps",
                *shlex.split(args.common),
            ]
            name = f"n{size}_s{seed}"
            rule = run_setting(args.root, f"{name}_rule", data)
            steps, gates = trained_steps_and_gates(args.root / "runs" / f"{name}_rule")
            rows.append((size, seed, "rule", steps, gates, rule))
            long_steps = args.factor * steps
            long = run_setting(
                args.root,
                f"{name}_x{args.factor}",
                [*data, "callbacks.early_stopping=null", f"trainer.max_steps={long_steps}"],
            )
            _, long_gates = trained_steps_and_gates(args.root / "runs" / f"{name}_x{args.factor}")
            rows.append((size, seed, f"{args.factor}x steps", long_steps, long_gates, long))
            print(f"done n={size} seed={seed}: rule stopped at step {steps}", flush=True)
    print(f"\ncommon: {args.common or '-'}")
    header = ("train samples", "seed", "schedule", "steps", "sample AUROC", "XV AUROC", "gates", "wall s")
    print("| " + " | ".join(header) + " |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for size, seed, schedule, steps, gates, record in rows:
        xv = record.get("sample_auroc_XV")
        print(
            f"| {size} | {seed} | {schedule} | {steps} | {record.get('sample_auroc', float('nan')):.3f} | "
            f"{'n/a' if xv is None else f'{xv:.3f}'} | {gates:.3f} | {record['wall_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
