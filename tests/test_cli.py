"""The entry points as users run them (subprocesses): data roots, one-line errors, run folders, a quiet
console, input checks, threshold warnings, trainer keys and `make demo ARGS=...`."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.runs import TINY_TRAIN, run_cli
from PIL import Image

pytestmark = pytest.mark.e2e  # trains, or runs a command line, end to end

REPO = Path(__file__).resolve().parents[1]
NOISE = (
    "litlogger",
    "anonymous setting has no effect",
    "LeafSpec",
    "module(s) in eval mode",
    "Error in call to target",
    "Traceback",
)
"""Third-party noise and wrappers that must not reach the console."""
CLI_TRAIN = [
    *[o for o in TINY_TRAIN if not o.startswith(("logger=", "trainer.max_epochs"))],
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=1",  # common Lightning keys need no `+`
    "trainer.check_val_every_n_epoch=1",
]
"""The tiny run with the default loggers (CSV and offline W&B), one training batch per epoch."""


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """(root, completed process) of ``python -m multiflow_pl.train`` on :data:`CLI_TRAIN`."""
    root = tmp_path_factory.mktemp("cli")
    done = run_cli("train", root, *CLI_TRAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done


def one_error_line(done) -> str:
    """The single ``error:`` line of a run stopped by a user error (exit status 2)."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "error:" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
    assert "Traceback" not in done.stderr and "Error in call to target" not in done.stderr
    return errors[0]


def test_training_console_is_quiet_plain_and_fits_80_columns(cli_run):
    _, done = cli_run
    output = done.stdout + done.stderr
    assert not [noise for noise in NOISE if noise in output]
    assert "\x1b[" not in output  # no colour codes when the output is not a terminal (W&B included)
    lines = output.splitlines()
    heading = lines.index("Multi-Flow results: can (seed 0)")
    table = lines[heading + 1 : heading + 4]
    assert "metric" in table[1] and all(len(line) <= 80 for line in table)
    assert "wandb: wandb sync" in output  # W&B's closing lines, in plain text
    # 1 of 6 training samples held out: the threshold rests on too few samples, and the run says so
    assert "fitted on only 1 held-out normal samples (fewer than 20)" in output
    assert "data.val_fraction" in output


def test_trainer_keys_need_no_plus(cli_run):
    import torch

    root, _ = cli_run
    checkpoint = torch.load(root / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2  # limit_train_batches=1 over 2 epochs (3 batches otherwise)


def test_evaluate_logs_into_its_own_run_folder(cli_run, tmp_path):
    root, _ = cli_run
    train_runs = sorted((root / "run" / "wandb").glob("offline-run-*"))
    assert len(train_runs) == 1
    done = run_cli(
        "evaluate",
        root,
        f"ckpt_path={root / 'run' / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        "logger=default",
        "callbacks.progress_bar=null",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted((root / "run" / "wandb").glob("offline-run-*")) == train_runs
    assert len(list((tmp_path / "eval" / "wandb").glob("offline-run-*"))) == 1
    assert (tmp_path / "eval" / "metrics.json").is_file() and (tmp_path / "eval" / "csv").is_dir()
    assert "\x1b[" not in done.stdout + done.stderr


def copy_test_sample(root: Path, key: str, folder: Path) -> Path:
    """The view images of synthetic test sample ``key`` as ``folder/<view>.jpg``."""
    folder.mkdir(parents=True)
    for image in (root / "data" / "synthetic" / "realiad_64" / "can").rglob(f"{key}_C*.jpg"):
        shutil.copy(image, folder / f"{image.name[len(key) + 1 :].split('_')[0]}.jpg")
    return folder


def test_failed_predict_leaves_no_run_folder(cli_run, tmp_path):
    root, _ = cli_run
    sample = copy_test_sample(root, "can_0007_OK", tmp_path / "part")
    (sample / "C3.jpg").unlink()
    run_dir = tmp_path / "predict"
    done = run_cli(
        "predict",
        root,
        f"ckpt_path={root / 'run/checkpoints/last.ckpt'}",
        f"input={sample}",
        f"hydra.run.dir={run_dir}",
        "strict=true",  # by default: an INVALID row instead (tests/test_invalid_samples.py)
    )
    assert "lacks view(s) C3" in one_error_line(done)
    assert not run_dir.exists()


def test_predict_flags_views_unlike_the_training_images(cli_run, tmp_path):
    root, _ = cli_run
    incoming = tmp_path / "incoming"
    copy_test_sample(root, "can_0007_OK", incoming / "odd")
    copy_test_sample(root, "can_0008_OK", incoming / "fine")
    odd = incoming / "odd"
    Image.open(odd / "C2.jpg").resize((333, 200)).save(odd / "C2.jpg")  # another aspect ratio
    Image.open(odd / "C3.jpg").convert("L").save(odd / "C3.jpg")  # grayscale
    Image.open(odd / "C4.jpg").resize((128, 128)).save(odd / "C4.jpg")  # another size
    args = [f"ckpt_path={root / 'run/checkpoints/last.ckpt'}", f"input={incoming}", "max_heatmaps=0"]
    done = run_cli("predict", root, *args, f"hydra.run.dir={tmp_path / 'lenient'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 of 2 samples have views whose images differ from the training images" in done.stdout
    with open(tmp_path / "lenient" / "scores.csv") as handle:
        rows = {row["key"]: row for row in csv.DictReader(handle)}
    assert rows["fine"]["input_flags"] == ""
    assert rows["odd"]["input_flags"] == (
        "C2 aspect 333x200 (aspect 1.67; trained 64x64); C3 channels 1 channel(s) (trained 3); "
        "C4 size 128x128 (trained 64x64)"
    )
    assert np.isfinite(float(rows["odd"]["score"])) and rows["odd"]["decision"] in ("OK", "NG")
    summary = json.loads((tmp_path / "lenient" / "summary.json").read_text())
    assert summary["input_flags"] == {"samples": 1, "size": 1, "aspect": 1, "channels": 1}
    # the threshold: how it was fitted, and a warning that too few samples fitted it
    assert summary["threshold_fitted_on"] == "the 0.99 quantile of the scores of 1 held-out normal samples"
    assert "fewer than 20" in summary["threshold_warning"]

    strict = run_cli("predict", root, *args, "strict=true", f"hydra.run.dir={tmp_path / 'strict'}")
    assert "Refused (strict=true)" in one_error_line(strict) and not (tmp_path / "strict").exists()


def test_predict_speed_settings_from_the_command_line_score_close_to_the_exact_path(cli_run, tmp_path):
    root, _ = cli_run
    split = root / "data" / "synthetic" / "realiad_jsons" / "can.json"
    args = [f"ckpt_path={root / 'run/checkpoints/last.ckpt'}", f"input={split}", "heatmaps=false"]
    scores, speed = {}, {}
    for name, settings in (("exact", []), ("line", ["speed=cpu", "backbone_streams=2"])):
        done = run_cli("predict", root, *args, *settings, f"hydra.run.dir={tmp_path / name}")
        assert done.returncode == 0, done.stderr[-3000:]
        with open(tmp_path / name / "scores.csv") as handle:
            scores[name] = {row["key"]: float(row["score"]) for row in csv.DictReader(handle)}
        speed[name] = json.loads((tmp_path / name / "summary.json").read_text())["speed"]
    assert speed["exact"] == {
        "device": "cpu",
        "backbone_frozen": False,
        "backbone_chunk": None,
        "backbone_streams": 1,
        "flow_conv_dtype": None,
    }
    assert speed["line"] == {
        "device": "cpu",
        "backbone_frozen": True,
        "backbone_chunk": 5,
        "backbone_streams": 2,  # the preset's auto, overridden on the command line
        "flow_conv_dtype": "bfloat16",
    }
    assert scores["line"].keys() == scores["exact"].keys() and len(scores["exact"]) == 6
    assert scores["line"] != scores["exact"]  # bfloat16 convolutions ran
    for key, exact in scores["exact"].items():
        assert scores["line"][key] == pytest.approx(exact, rel=3e-2, abs=3e-2)


def test_mistyped_data_root_is_an_error_and_renders_nothing(tmp_path):
    missing = tmp_path / "nonexistent" / "rig"
    done = run_cli("train", tmp_path, *TINY_TRAIN, f"data.root={missing}")
    line = one_error_line(done)
    assert (
        f"Dataset root {missing} (data.root) does not exist" in line and "data.generate.create=true" in line
    )
    assert not (tmp_path / "nonexistent").exists()
    full = run_cli("train", tmp_path, *TINY_TRAIN, f"data.root={missing}", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr and "DatasetError" in full.stderr


def test_weights_file_that_does_not_fit_stops_with_one_line(tmp_path):
    import torch

    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)  # no tensor of resnet18's stem
    line = one_error_line(run_cli("train", tmp_path, *TINY_TRAIN, f"backbone.weights_file={path}"))
    assert str(path) in line and "tensors are missing (first: conv1.weight)" in line


def test_realiad_without_the_dataset_fails_before_fetching_weights(tmp_path):
    done = run_cli(
        "train",
        tmp_path,
        "+experiment=realiad",
        f"data.root={tmp_path / 'Real-IAD'}",
        env={"HF_HUB_OFFLINE": "1"},  # were weights fetched first, this would end in a weights error
    )
    line = one_error_line(done)
    assert "data.root" in line and "REALIAD_ROOT" in line and "weights" not in line


def test_make_demo_passes_args(tmp_path):
    assert shutil.which("make"), "make runs the README's two commands; install it (e.g. apt-get install make)"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: make installs nothing
    args = " ".join([*TINY_TRAIN, "trainer.max_epochs=1", "test=false", f"paths.root_dir={tmp_path}"])
    done = run_cli(None, tmp_path, command=["make", "-C", str(REPO), "demo", f"VENV={venv}", f"ARGS={args}"])
    assert done.returncode == 0, done.stderr[-3000:]
    overrides = next(tmp_path.glob("logs/train/runs/*/.hydra/overrides.yaml")).read_text()
    assert re.search(r"- trainer.max_epochs=1\n", overrides) and "- test=false" in overrides
