"""How far two predict runs' scores lie apart, and what that does to sample AUROC (per defect type too).

For a speed setting that changes float rounding (e.g. ``flow_conv_dtype=bfloat16``): score the same
labelled samples with and without it, then

    PYTHONPATH=src python benchmarks/compare_scores.py RUN_A RUN_B

(``RUN_*``: predict run folders or their ``scores.csv``). Prints the largest difference of the per-view
scores, absolute and relative to the largest score magnitude, and each run's sample AUROC (max over
views) overall and per anomaly class against the normal samples.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from torchmetrics.functional.classification import binary_auroc


def read_scores(path: Path) -> tuple[list[str], torch.Tensor, list[dict]]:
    """``scores.csv`` (or its run folder) -> (keys, view scores [N,V], rows)."""
    path = path / "scores.csv" if path.is_dir() else path
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    views = [c for c in rows[0] if c.startswith("score_") and c != "score_mean"]
    scores = torch.tensor([[float(row[v]) for v in views] for row in rows], dtype=torch.float64)
    return [row["key"] for row in rows], scores, rows


def sample_aurocs(scores: torch.Tensor, rows: list[dict]) -> dict[str, float]:
    """Sample AUROC (max over views) of all samples and of each anomaly class against the normal ones."""
    labels = torch.tensor([int(row["label"]) for row in rows])
    classes = [row["anomaly_class"] for row in rows]
    sample = scores.amax(dim=1)
    result = {"all": float(binary_auroc(sample, labels))}
    for name in sorted({c for c, label in zip(classes, labels.tolist(), strict=True) if label}):
        keep = torch.tensor(
            [c == name or not label for c, label in zip(classes, labels.tolist(), strict=True)]
        )
        result[name] = float(binary_auroc(sample[keep], labels[keep]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs=2, help="two predict run folders (or scores.csv files)")
    args = parser.parse_args()
    (keys_a, a, rows_a), (keys_b, b, rows_b) = (read_scores(run) for run in args.runs)
    if keys_a != keys_b or a.shape != b.shape:
        raise SystemExit("error: the two runs scored different samples or views; score the same input.")
    diff = (a - b).abs().max().item()
    print(f"{len(keys_a)} samples x {a.shape[1]} views")
    print(f"largest view-score difference: {diff:.4g} absolute, {diff / a.abs().max().item():.3g} relative")
    if "label" not in rows_a[0]:
        print("(unlabelled input: no AUROC)")
        return
    first, second = sample_aurocs(a, rows_a), sample_aurocs(b, rows_b)
    print("\n| sample AUROC | " + " | ".join(str(run) for run in args.runs) + " |\n|---|---:|---:|")
    for name in first:
        print(f"| {name} | {100 * first[name]:.2f} | {100 * second[name]:.2f} |")


if __name__ == "__main__":
    main()
