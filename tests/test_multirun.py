"""Real multiruns launched as a user launches them (``python -m multiflow_pl.train -m ...`` in a fresh
process, output piped as in CI or SLURM), then the report on their folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.runs import TINY_TRAIN

pytestmark = pytest.mark.e2e  # trains, or runs a command line, end to end

SRC = Path(__file__).resolve().parents[1] / "src"

TINY_CLI = [
    o
    for o in TINY_TRAIN
    if not o.startswith(("callbacks.progress_bar", "callbacks.predictions", "++trainer.enable_progress_bar"))
]
"""The tiny synthetic run (helpers.runs) (6 + 6 samples of 64 px, 2 epochs) with the default progress display
(``auto``) and prediction pickles."""


def launch(module: str, args: list[str], cwd: Path, home: Path | None = None) -> str:
    """Run ``python -m <module> ARGS`` in ``cwd`` with MULTIFLOW_HOME set to ``home`` (unset for None) and
    its output piped; return stdout + stderr after checking that it succeeded."""
    env = {k: v for k, v in os.environ.items() if k != "MULTIFLOW_HOME"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    if home is not None:
        env["MULTIFLOW_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,  # minutes on an idle machine; CI machines may be shared
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def sweep_jobs(root: Path) -> tuple[Path, list[dict]]:
    """The only multirun folder under ``root``/logs/train/multiruns and the metrics.json of each job."""
    (sweep,) = (root / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return sweep, [json.loads((job / "metrics.json").read_text()) for job in jobs]


def test_plain_override_multirun_from_the_launch_folder_logs_one_line_per_epoch(tmp_path):
    output = launch("multiflow_pl.train", ["-m", "seed=0,1", *TINY_CLI], cwd=tmp_path)
    sweep, metrics = sweep_jobs(tmp_path)
    assert [m["seed"] for m in metrics] == [0, 1]
    assert all(m["category"] == "can" and 0.0 <= m["sample_auroc"] <= 1.0 for m in metrics)
    assert (sweep / "0" / "predictions" / "can.pkl").is_file()
    assert (tmp_path / "data" / "synthetic" / "realiad_jsons" / "can.json").is_file()
    # output that is not a terminal: no progress bar redrawn with carriage returns, one line per epoch
    assert "\r" not in output
    assert re.findall(r"Epoch (\d+)/2: ", output) == ["1", "2", "1", "2"]  # two jobs of two epochs


def test_experiment_sweep_under_multiflow_home_then_report(tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # synthetic_sweep crosses 3 categories x 2 graphs x 2 seeds; fixing two axes leaves its 2 graphs
    launch(
        "multiflow_pl.train",
        ["-m", "+experiment=synthetic_sweep", "data.category=can", "seed=0", *TINY_CLI],
        cwd=elsewhere,
        home=home,
    )
    assert not any(elsewhere.iterdir())  # everything went under MULTIFLOW_HOME
    sweep, metrics = sweep_jobs(home)
    assert len(metrics) == 2 and all(m["category"] == "can" and m["seed"] == 0 for m in metrics)
    graphs = [
        next(
            line
            for line in (sweep / job / ".hydra" / "overrides.yaml").read_text().splitlines()
            if "graph" in line
        )
        for job in ("0", "1")
    ]
    assert graphs == ["- model.flow.graph=top_ring", "- model.flow.graph=none"]

    output = launch("multiflow_pl.report", [str(sweep)], cwd=elsewhere)
    report = (sweep / "report.md").read_text()
    assert "model.flow.graph=top_ring" in report and "model.flow.graph=none" in report
    assert "## Per category" in output
    assert {"per_category.csv", "summary.csv", "report.png"} <= {p.name for p in sweep.iterdir()}
