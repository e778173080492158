"""Writers of run results, each file written atomically: metrics.json, per-view / per-sample score tables
and Real-IAD prediction pickles."""

from __future__ import annotations

import csv
import json
import math
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from multiflow_pl.utils.atomic import atomic_path, write_atomic


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
    write_csv(run_dir / "view_scores.csv", view_records)
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
    write_csv(run_dir / "sample_scores.csv", rows)


def write_csv(path: Path, rows: Sequence[Mapping]) -> Path:
    """Write ``rows`` as a CSV table (columns: every key, in order of first appearance), atomically."""
    columns = list(dict.fromkeys(column for row in rows for column in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_realiad_predictions(
    path: Path,
    image_paths: Sequence[str],
    anomaly_maps: Sequence[np.ndarray],
    image_scores: Sequence[float],
    mask_paths: Sequence[str | None],
) -> Path:
    """Write Real-IAD's prediction pickle ``{image_path: (anomaly_map, image_score, mask_path)}``.

    This is the input of the dataset's official evaluation tool (ADEval). ``anomaly_maps`` are 2-D float
    arrays ([M,M] each, e.g. views into a memory-mapped file: protocol 5 pickles them straight from their
    buffers, so the maps are never all copied into memory). ``mask_paths`` hold ``None`` for normal images.
    Written through a temporary file and a rename, so a half-written pickle never has the final name.
    """
    if not len(image_paths) == len(anomaly_maps) == len(image_scores) == len(mask_paths):
        raise ValueError(
            f"{len(image_paths)} image paths, {len(anomaly_maps)} maps, {len(image_scores)} scores and "
            f"{len(mask_paths)} mask paths; give one of each per image."
        )
    if len(set(image_paths)) != len(image_paths):
        raise ValueError("image paths must be unique: they are the keys of the prediction pickle.")
    predictions = {}
    for image_path, anomaly_map, score, mask_path in zip(
        image_paths, anomaly_maps, image_scores, mask_paths, strict=True
    ):
        anomaly_map = np.asarray(anomaly_map)
        if anomaly_map.ndim != 2 or anomaly_map.dtype.kind != "f":
            raise ValueError(
                f"anomaly map of {image_path} must be a 2-D float array, got {anomaly_map.shape}"
            )
        if not math.isfinite(score):
            raise ValueError(
                f"image score of {image_path} is {score}; the evaluation tool needs finite scores."
            )
        predictions[str(image_path)] = (
            anomaly_map,
            float(score),
            None if mask_path is None else str(mask_path),
        )
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        pickle.dump(predictions, handle, protocol=5)
    return path
