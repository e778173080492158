"""Export (torch.export and ONNX) and multiflow_pl.inference: image files scored by the exported model,
prepared by the helper, give the Python model's scores on the synthetic test split."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch
from helpers.runs import compose_config, run_cli
from PIL import Image
from torch.utils.data import DataLoader

from multiflow_pl.data.dataset import MultiViewImageDataset, collate_samples
from multiflow_pl.data.images import read_image
from multiflow_pl.data.realiad import load_samples
from multiflow_pl.export import export
from multiflow_pl.inference import ExportedScorer
from multiflow_pl.models.model import OUTPUT_NAMES
from multiflow_pl.models.model_export import export_model
from multiflow_pl.pipeline import load_trained_model
from multiflow_pl.speed.folded_subnet import use_folded_convolutions

VIEWS = ["C1", "C2", "C3", "C4", "C5"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=["exported_program", "onnx"])
def exported(request, tiny_run, tmp_path_factory):
    """(export.json contents, export folder) of the tiny run's checkpoint in each format."""
    if request.param == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    root = tmp_path_factory.mktemp(request.param)
    cfg = compose_config("export", root, [f"ckpt_path={tiny_run.checkpoint}", f"format={request.param}"])
    return export(cfg), root / "run"


def test_exported_scores_of_image_files_equal_the_python_scores_on_the_test_split(tiny_run, exported):
    metadata, folder = exported
    assert metadata["max_abs_difference_from_python"] < TOLERANCE
    assert json.loads((folder / "export.json").read_text()) == metadata
    with open(tiny_run.run_dir / "view_scores.csv") as handle:  # the Python model, at test time
        rows = csv.DictReader(handle)
        expected = {(r["key"], VIEWS[int(r["view"])]): float(r["image_score"]) for r in rows}
    scorer = ExportedScorer(folder)
    rows = list(scorer.score_path(tiny_run.data_root / "realiad_jsons" / "can.json", batch_size=4))
    assert len(rows) * len(VIEWS) == len(expected) == 30
    worst = max(abs(row[f"score_{v}"] - expected[(row["key"], v)]) for row in rows for v in VIEWS)
    assert worst < TOLERANCE
    for row in rows:
        assert row["score"] == max(row[f"score_{v}"] for v in VIEWS)
        assert row["decision"] == ("NG" if row["score"] > metadata["threshold"]["value"] else "OK")


def test_every_output_matches_the_python_model_for_any_batch_size(tiny_run, exported):
    _, folder = exported
    python_model = load_trained_model(tiny_run.checkpoint).model
    assert python_model.round_features  # trained on cached (float16) features
    samples = load_samples(tiny_run.data_root, "can", "test", resolution="64")
    dataset = MultiViewImageDataset(samples, 64, 0, python_model.feature_size, foreground="auto")
    images = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_samples)))["images"]
    scorer = ExportedScorer(folder)
    for batch in (images, images[:1]):  # exported with 2 samples; other batch sizes work too
        found = scorer(batch)
        with torch.no_grad():
            wanted = python_model(batch)
        for name, want in zip(OUTPUT_NAMES, wanted, strict=True):
            assert found[name].shape == want.shape, name
            torch.testing.assert_close(found[name], want, rtol=0, atol=TOLERANCE, msg=name)


def test_scorer_rejects_images_of_another_shape(exported):
    scorer = ExportedScorer(exported[1])
    for wrong in (torch.rand(1, 4, 3, 64, 64), torch.rand(1, 5, 1, 64, 64), torch.rand(1, 5, 3, 32, 32)):
        with pytest.raises(ValueError, match=r"Expected images \[B, 5, 3, 64, 64\]"):
            scorer(wrong)


def test_helper_resizes_as_the_model_was_trained_not_as_pil_does(tmp_path, write_image):
    path = write_image(tmp_path / "view.png", size=96, seed=1)
    ours = read_image(path, 64)
    with Image.open(path) as img:
        pil = torch.tensor(list(img.convert("RGB").resize((64, 64), Image.BILINEAR).getdata())).float()
    pil = pil.view(64, 64, 3).permute(2, 0, 1) / 255
    assert (ours - pil).abs().max() > 1e-3  # the difference the helper spares its users


def test_unsupported_format_and_foreground_are_refused(tmp_path, tiny_run):
    with pytest.raises(ValueError, match="supported: exported_program, onnx"):
        export(compose_config("export", tmp_path, [f"ckpt_path={tiny_run.checkpoint}", "format=torchscript"]))
    model = load_trained_model(tiny_run.checkpoint).model
    model.foreground = "folder"
    with pytest.raises(ValueError, match="foreground='folder'"):
        export_model(model, tmp_path / "model.pt2", "exported_program")


def test_export_and_inference_command_lines(tmp_path, tiny_run):
    done = run_cli("export", tmp_path, f"ckpt_path={tiny_run.checkpoint}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "multiflow.pt2").is_file()
    sample = tiny_run.data_root / "realiad_jsons" / "can.json"
    command = [sys.executable, "-m", "multiflow_pl.inference", "run", str(sample)]
    scored = run_cli(None, tmp_path, command=command)
    assert scored.returncode == 0, scored.stderr[-3000:]
    rows = list(csv.DictReader(scored.stdout.splitlines()))
    assert len(rows) == 6 and {"key", "score", "decision", "score_C1"} <= set(rows[0])
    assert "deprecated" not in done.stderr + scored.stderr


def test_winograd_flows_export_with_library_convolutions(tmp_path, tiny_run):
    python_model = load_trained_model(tiny_run.checkpoint).model
    use_folded_convolutions(python_model.flow, "winograd")  # a CPU choice of auto; batch-dependent chunks
    path = export_model(python_model, tmp_path / "model.pt2", "exported_program")
    images = torch.rand(3, 5, 3, 64, 64)
    with torch.no_grad():
        wanted = python_model(images)
    for want, found in zip(wanted, torch.export.load(path).module()(images), strict=True):
        torch.testing.assert_close(found, want, rtol=0, atol=TOLERANCE)
