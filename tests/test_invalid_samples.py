"""One unreadable image costs one sample, not the run: predict and inference from the command line over a
folder with a truncated JPEG, a zero-byte file, a text file named .jpg and a missing view (INVALID rows,
exit status 3; strict stops), and evaluate's clear error where a test image cannot be read."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers.runs import run_cli
from test_cli import one_error_line
from test_predict import VIEWS, copy_sample

from multiflow_pl.data.dataset import readable_batches
from multiflow_pl.data.view_profile import InputFlag
from multiflow_pl.errors import EXIT_USER_ERROR
from multiflow_pl.invalid import EXIT_INVALID_SAMPLES

GOOD = {"a_good": "can_0007_OK", "c_good": "can_0001_NG_HS", "f_good": "can_0008_OK"}
"""Intact samples (folder -> test sample copied), around the bad ones in input order."""
BAD_FLAGS = {
    "b_truncated": "C3 damaged (",  # PIL's words for a truncated file vary
    "d_empty": "C1 empty (0-byte file)",
    "e_text": "C2 not_image (not an image file)",
    "g_missing": "C5 missing (no such file)",
}
"""Bad samples -> the start of their input_flags. With batches of 3, the first batch holds the three good
samples and the first three bad ones, the last one nothing but the last bad sample."""
SCORE_COLUMNS = ["score", "score_mean", *(f"score_{view}" for view in VIEWS)]


@pytest.fixture(scope="module")
def incoming(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """``{"all": folder with the good and the bad samples, "good": the good ones alone}``."""
    root = tmp_path_factory.mktemp("incoming")
    for name, key in GOOD.items():
        copy_sample(tiny_run, key, root / "good" / name)
    shutil.copytree(root / "good", root / "all")
    for name in BAD_FLAGS:
        copy_sample(tiny_run, "can_0009_OK", root / "all" / name)
    truncated = root / "all" / "b_truncated" / "C3.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (root / "all" / "d_empty" / "C1.jpg").write_bytes(b"")
    (root / "all" / "e_text" / "C2.jpg").write_text("not an image\n")
    (root / "all" / "g_missing" / "C5.jpg").unlink()
    return {"all": root / "all", "good": root / "good"}


def read_rows(text: str) -> dict[str, dict]:
    return {row["key"]: row for row in csv.DictReader(text.splitlines())}


def assert_invalid_rows(rows: dict[str, dict], reference: dict[str, dict]) -> None:
    """Bad samples: INVALID, their flags, no scores; good ones: the scores of a run without the bad ones."""
    assert list(rows) == sorted([*GOOD, *BAD_FLAGS])  # every sample, in input order
    for name, flags in BAD_FLAGS.items():
        assert rows[name]["decision"] == "INVALID" and rows[name]["input_flags"].startswith(flags)
        assert all(rows[name][column] == "" for column in SCORE_COLUMNS)
    assert rows["b_truncated"]["input_flags"].count("C3") == 1  # only the view that cannot be read
    for name in GOOD:
        assert rows[name]["decision"] in ("OK", "NG") and rows[name]["input_flags"] == ""
        assert [rows[name][c] for c in SCORE_COLUMNS] == [reference[name][c] for c in SCORE_COLUMNS]


def test_readable_samples_are_batched_as_without_the_unreadable_ones():
    items = [{"key": key, "index": torch.tensor(i)} for i, key in enumerate("abcdefg")]
    for i in (1, 3, 4, 6):
        items[i]["unreadable"] = [InputFlag("C1", "empty", "(0-byte file)")]
    batches = list(readable_batches(items, 2))
    assert [batch.get("key") for batch in batches] == [["a", "c"], ["f"]]
    assert [[item["key"] for item in batch["unreadable"]] for batch in batches] == [["b"], ["d", "e", "g"]]
    assert batches[0]["index"].tolist() == [0, 2]
    batches = list(readable_batches(items, 3))  # a last batch of unreadable samples only
    assert [sorted(batch) for batch in batches] == [["index", "key", "unreadable"], ["unreadable"]]
    assert [item["key"] for item in batches[1]["unreadable"]] == ["g"]


def test_predict_scores_the_intact_samples_and_flags_the_unreadable_ones(tiny_run, incoming, tmp_path):
    args = [f"ckpt_path={tiny_run.checkpoint}", "batch_size=3"]
    reference = run_cli("predict", tmp_path, *args, f"input={incoming['good']}", "hydra.run.dir=good")
    assert reference.returncode == 0, reference.stderr[-3000:]
    done = run_cli("predict", tmp_path, *args, f"input={incoming['all']}", "hydra.run.dir=all")
    assert done.returncode == EXIT_INVALID_SAMPLES == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "error:" not in done.stdout + done.stderr

    rows = read_rows((tmp_path / "all" / "scores.csv").read_text())
    assert_invalid_rows(rows, read_rows((tmp_path / "good" / "scores.csv").read_text()))
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["n_samples"] == 7 and summary["decisions"]["INVALID"] == 4
    assert summary["decisions"]["OK"] + summary["decisions"]["NG"] == 3
    assert summary["invalid_samples"] == list(BAD_FLAGS)
    assert summary["unreadable"] == {"samples": 4, "missing": 1, "empty": 1, "not_image": 1, "damaged": 1}
    assert summary["input_flags"]["samples"] == 0  # no view unlike the training images
    assert "4 of 7 samples are INVALID and have no score: b_truncated (C3 damaged" in done.stdout
    assert "Scored 7 samples: {'OK': " in done.stdout and "'INVALID': 4}" in done.stdout
    heatmaps = sorted(path.name for path in (tmp_path / "all" / "heatmaps").iterdir())
    assert heatmaps == [f"{name}.png" for name in GOOD]
    assert [rows[name]["heatmap"] for name in BAD_FLAGS] == [""] * 4


def test_predict_strict_stops_at_the_first_bad_input_and_writes_nothing(tiny_run, incoming, tmp_path):
    args = [f"ckpt_path={tiny_run.checkpoint}", "strict=true"]
    done = run_cli("predict", tmp_path, *args, f"input={incoming['all']}", "hydra.run.dir=all")
    assert "g_missing lacks view(s) C5" in one_error_line(done)  # found when the samples are listed
    assert not (tmp_path / "all").exists()

    without_missing = tmp_path / "incoming"
    shutil.copytree(incoming["all"], without_missing, ignore=shutil.ignore_patterns("g_missing"))
    done = run_cli("predict", tmp_path, *args, f"input={without_missing}", "hydra.run.dir=rest")
    bad = without_missing / "b_truncated" / "C3.jpg"
    line = one_error_line(done)
    assert line.startswith(f"error: Cannot read image {bad}: ") and "runcated" in line
    assert not (tmp_path / "rest").exists()


def test_inference_scores_the_intact_samples_and_flags_the_unreadable_ones(tiny_run, incoming, tmp_path):
    exported = run_cli("export", tmp_path, f"ckpt_path={tiny_run.checkpoint}")
    assert exported.returncode == 0, exported.stderr[-3000:]

    def inference(folder: Path, *options: str):
        command = [sys.executable, "-m", "multiflow_pl.inference", "run", str(folder), "--batch-size=3"]
        return run_cli(None, tmp_path, command=[*command, *options])

    reference = inference(incoming["good"])
    assert reference.returncode == 0, reference.stderr[-3000:]
    done = inference(incoming["all"])
    assert done.returncode == EXIT_INVALID_SAMPLES, done.stderr[-3000:]
    assert_invalid_rows(read_rows(done.stdout), read_rows(reference.stdout))
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "4 of 7 samples are INVALID and have no score: b_truncated (C3" in warning[0]
    assert "g_missing (C5 missing (no such file))" in warning[0] and "Traceback" not in done.stderr

    strict = inference(incoming["all"], "--strict")
    assert strict.returncode == EXIT_USER_ERROR and "Traceback" not in strict.stderr
    errors = [line for line in strict.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "g_missing lacks view(s) C5" in errors[0], strict.stderr[-3000:]


@pytest.mark.parametrize("workers", [0, 2], ids=["in_process", "dataloader_workers"])
def test_evaluate_stops_naming_a_test_image_that_cannot_be_read(tiny_run, tmp_path, workers):
    """Metrics need every test sample: a clear error, also when DataLoader workers read the images."""
    data = tmp_path / "data"
    shutil.copytree(tiny_run.data_root, data)
    bad = next((data / "realiad_64" / "can" / "OK").rglob("can_0007_OK_C2_*.jpg"))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    done = run_cli(
        "evaluate",
        tmp_path,
        f"ckpt_path={tiny_run.checkpoint}",
        f"+data.root={data}",
        f"+data.num_workers={workers}",
        f"+data.cache.num_workers={workers}",
    )
    line = one_error_line(done)
    assert line.startswith(f"error: Cannot read image {bad}: ") and "runcated" in line
    assert line.endswith(". Replace or remove the file.")
    assert not (tmp_path / "run" / "metrics.json").exists()
