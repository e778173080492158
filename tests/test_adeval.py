"""Real-IAD's official evaluator (ADEval), run as its own command line on a run's prediction pickle,
agrees with the run's metrics.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.runs import TINY_TRAIN, compose_config

from multiflow_pl.train import train

pytestmark = pytest.mark.e2e  # trains, or runs a command line, end to end

pytest.importorskip("adeval")

SAMPLE_KEY = r"([a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z])_C[0-9]_"
"""Real-IAD's sample key (the part of a file name before ``_C<view>_``), with the one group ADEval wants."""

AUPR_KEYS = {"s_aupr": "sample_aupr", "i_aupr": "image_aupr", "p_aupr": "pixel_aupr"}
"""ADEval's output name -> metrics.json key of the figures computed by ADEval's procedure (1000 strips)."""
CURVE_KEYS = {
    "s_auroc": "sample_auroc",
    "i_auroc": "image_auroc",
    "p_auroc": "pixel_auroc",
    "p_aupro": "pixel_aupro",
}
"""The same for the figures metrics.json computes exactly (pixel ones from fine bins), ADEval from strips."""


def run_adeval(*args: str) -> dict[str, float]:
    """Run ``python -m multiflow_pl.adeval ARGS`` (ADEval's own CLI); its metrics from its output line."""
    done = subprocess.run(
        [sys.executable, "-m", "multiflow_pl.adeval", *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fields = done.stdout.strip().splitlines()[-1].split(",")[1:]
    return {name: float(value) for name, value in zip(fields[::2], fields[1::2], strict=True)}


def test_adeval_cli_agrees_with_metrics_json(tmp_path):
    overrides = [o for o in TINY_TRAIN if not o.startswith("callbacks.predictions")]
    overrides += ["data.generate.n_test=12", "trainer.max_epochs=1"]  # 6 normal + defects of every type
    train(compose_config("train", tmp_path, overrides))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    pickle_path = tmp_path / "run" / "predictions" / "can.pkl"
    # The pickle's paths are relative to the category folder, as in Real-IAD's JSONs: hence --add_prefix.
    category_folder = tmp_path / "data" / "synthetic" / "realiad_64" / "can"
    args = [str(pickle_path), "--add_prefix", f"{category_folder}/", "--sample_key_pat", SAMPLE_KEY]
    official = run_adeval(*args)
    for adeval_name, key in AUPR_KEYS.items():
        assert metrics[key] == pytest.approx(official[adeval_name], abs=1e-3), (key, metrics[key], official)
    # ADEval's curves count the scores within one of its 1000 strips as ties: on a set of 60 images that
    # moves the image AUROC by ~1e-3 (on the demo's 480 by less). With fine strips it is the exact AUROC.
    for adeval_name, key in CURVE_KEYS.items():
        assert metrics[key] == pytest.approx(official[adeval_name], abs=5e-3), (key, metrics[key], official)
    fine = run_adeval(*args, "--nstrips", "100000")
    for adeval_name, key in CURVE_KEYS.items():
        assert metrics[key] == pytest.approx(fine[adeval_name], abs=1e-3), (key, metrics[key], fine)
    # Average precision (the step sum over all scores) is another quantity than ADEval's AUPR.
    assert metrics["image_ap"] != pytest.approx(metrics["image_aupr"], abs=1e-3)
