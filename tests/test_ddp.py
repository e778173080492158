"""The DDP path on CPU: two gloo processes train and test through the real entry point, and rank 0's
results equal a single-process evaluation of the same checkpoint (every test sample counted once)."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import compose_config
from hydra.core.global_hydra import GlobalHydra
from test_pipeline import TINY_DATA

from multiflow_pl.evaluate import evaluate

pytestmark = pytest.mark.e2e  # trains, or runs a command line, end to end

SRC = Path(__file__).resolve().parents[1] / "src"
N_TEST = 7  # odd: a padding DistributedSampler would repeat a sample on one of the two ranks
METRICS = (
    "image_auroc",
    "image_ap",
    "sample_auroc",
    "sample_auroc_mean",
    "pixel_auroc",
    "pixel_ap",
    "pixel_aupro",
)


def test_ddp_on_two_cpu_processes_matches_single_process_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    overrides = [o for o in TINY_DATA if not o.startswith("data.generate.n_test=")]
    command = [
        sys.executable,
        "-m",
        "multiflow_pl.train",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        f"data.generate.n_test={N_TEST}",
        f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    run = tmp_path / "run"
    assert "GLOBAL_RANK: 1" in done.stdout + done.stderr  # two processes really ran

    with (run / "view_scores.csv").open() as handle:
        images = [row["image_path"] for row in csv.DictReader(handle)]
    assert len(images) == len(set(images)) == N_TEST * 5
    with (run / "predictions" / "can.pkl").open("rb") as handle:
        assert len(pickle.load(handle)) == N_TEST * 5
    assert (run / "plots" / "roc.png").is_file()

    distributed = json.loads((run / "metrics.json").read_text())
    checkpoint = next((run / "checkpoints").glob("*.ckpt"))
    single = evaluate(compose_config("eval", tmp_path / "eval", [f"ckpt_path={checkpoint}", "logger=csv"]))
    GlobalHydra.instance().clear()
    per_class = [key for key in single if key.startswith("sample_auroc_") and key != "sample_auroc_mean"]
    assert per_class  # the defect classes' sample AUROC, gathered by torchmetrics as class-name bytes
    for key in (*METRICS, *per_class):
        assert distributed[key] == pytest.approx(single[key], abs=1e-6), key
