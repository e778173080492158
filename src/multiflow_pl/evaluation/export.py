"""Writing run results: metrics.json and per-view / per-sample score tables."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_metrics_json(path: Path, metrics: Mapping[str, float], category: str, seed: int | None) -> dict:
    """Flat metrics.json (keys in DESIGN.md); NaN is written as null."""
    record = {k: (None if isinstance(v, float) and math.isnan(v) else float(v)) for k, v in metrics.items()}
    record.update({"category": category, "seed": seed})
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def write_score_tables(run_dir: Path, view_records: Sequence[Mapping]) -> None:
    """``view_scores.csv`` (one row per view image) and ``sample_scores.csv`` (max and mean over views)."""
    if not view_records:
        return
    _write_csv(run_dir / "view_scores.csv", view_records)
    samples: dict[str, dict] = {}
    for record in view_records:
        row = samples.setdefault(
            record["key"], {"key": record["key"], "sample_label": record["sample_label"], "scores": []}
        )
        row["scores"].append(record["image_score"])
    rows = [
        {
            "key": row["key"],
            "sample_label": row["sample_label"],
            "score_max": max(row["scores"]),
            "score_mean": sum(row["scores"]) / len(row["scores"]),
            "n_views": len(row["scores"]),
        }
        for row in samples.values()
    ]
    _write_csv(run_dir / "sample_scores.csv", rows)


def _write_csv(path: Path, rows: Sequence[Mapping]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
