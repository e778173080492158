"""multiflow_pl.predict: scores equal the evaluation's, every input layout, the outputs, user errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch
from helpers.runs import compose_config

from multiflow_pl.errors import user_errors
from multiflow_pl.evaluate import evaluate
from multiflow_pl.models.threshold import CHECKPOINT_KEY
from multiflow_pl.predict import predict

VIEWS = ["C1", "C2", "C3", "C4", "C5"]


def run_predict(tmp_path: Path, checkpoint: Path, source: Path, *overrides: str) -> tuple[dict, list[dict]]:
    """Predict into ``tmp_path/run``; returns the summary and the rows of scores.csv."""
    cfg = compose_config("predict", tmp_path, [f"ckpt_path={checkpoint}", f"input={source}", *overrides])
    summary = predict(cfg)
    with open(tmp_path / "run" / "scores.csv") as handle:
        return summary, list(csv.DictReader(handle))


def copy_sample(tiny_run, key: str, folder: Path) -> Path:
    """Copy the view images of test sample ``key`` into ``folder`` as ``<view>.<ext>``."""
    folder.mkdir(parents=True, exist_ok=True)
    for image in (tiny_run.data_root / "realiad_64" / "can").rglob(f"{key}_C*.jpg"):
        view = image.name[len(key) + 1 :].split("_")[0]
        shutil.copy(image, folder / f"{view}{image.suffix}")
    return folder


def test_predict_reproduces_the_evaluation_scores_exactly(tmp_path, tiny_run):
    again = evaluate(
        compose_config("eval", tmp_path / "eval", [f"ckpt_path={tiny_run.checkpoint}", "logger=csv"])
    )
    assert again["image_auroc"] == tiny_run.metrics["image_auroc"]
    with open(tmp_path / "eval" / "run" / "view_scores.csv") as handle:
        expected = {
            (row["key"], VIEWS[int(row["view"])]): float(row["image_score"]) for row in csv.DictReader(handle)
        }

    split_json = tiny_run.data_root / "realiad_jsons" / "can.json"
    summary, rows = run_predict(tmp_path / "predict", tiny_run.checkpoint, split_json, "max_heatmaps=2")
    assert len(rows) * len(VIEWS) == len(expected) == 30
    for row in rows:
        for view in VIEWS:
            assert float(row[f"score_{view}"]) == expected[(row["key"], view)]
        assert float(row["score"]) == max(float(row[f"score_{view}"]) for view in VIEWS)

    threshold = summary["threshold"]
    assert summary["layout"] == "realiad_json" and summary["n_samples"] == 6
    for row in rows:
        score, normalised = float(row["score"]), float(row["normalised"])
        assert row["decision"] == ("NG" if score > threshold["value"] else "OK")
        assert (normalised > 1) == (row["decision"] == "NG")
        assert row["label"] in ("0", "1")
    heatmaps = sorted((tmp_path / "predict" / "run" / "heatmaps").iterdir())
    assert sorted(row["heatmap"] for row in rows) == ["", "", "", ""] + [str(path) for path in heatmaps]
    confusion = summary["confusion"]
    assert sum(confusion.values()) == 6
    assert confusion["true_ng"] + confusion["false_ok"] == sum(row["label"] == "1" for row in rows)
    assert json.loads((tmp_path / "predict" / "run" / "summary.json").read_text()) == summary


def test_every_input_layout_gives_the_same_scores(tmp_path, tiny_run):
    key = "can_0007_OK"
    incoming = tmp_path / "incoming"
    copy_sample(tiny_run, key, incoming / "part_a")
    copy_sample(tiny_run, "can_0001_NG_HS", incoming / "part_b")
    rig = tmp_path / "rig"
    shutil.copytree(incoming / "part_a", rig / "test" / "good" / "part_a")

    def scores(source: Path, name: str, *extra: str) -> tuple[str, dict[str, list[float]]]:
        summary, rows = run_predict(tmp_path / name, tiny_run.checkpoint, source, "heatmaps=false", *extra)
        assert summary["n_samples"] == len(rows)
        return summary["layout"], {row["key"]: [float(row[f"score_{v}"]) for v in VIEWS] for row in rows}

    def same(found: dict, expected: dict) -> bool:  # other batch sizes: float32 rounding differences only
        return found.keys() == expected.keys() and all(found[k] == pytest.approx(expected[k]) for k in found)

    layout, reference = scores(tiny_run.data_root, "root", "split=test")
    assert layout == "realiad" and len(reference) == 6
    layout, one = scores(incoming / "part_a", "one")
    assert layout == "sample" and same(one, {"part_a": reference[key]})
    layout, several = scores(incoming, "several")
    assert layout == "samples" and same(
        several, {"part_a": reference[key], "part_b": reference["can_0001_NG_HS"]}
    )
    layout, rig_scores = scores(rig, "rig")
    assert layout == "folder" and same(rig_scores, {"good_part_a": reference[key]})


def test_without_a_threshold_only_raw_scores_are_reported(tmp_path, tiny_run, caplog):
    checkpoint = torch.load(tiny_run.checkpoint, weights_only=True)
    del checkpoint[CHECKPOINT_KEY]
    bare = tmp_path / "bare.ckpt"
    torch.save(checkpoint, bare)
    sample = copy_sample(tiny_run, "can_0007_OK", tmp_path / "part")
    with caplog.at_level("WARNING"):
        summary, rows = run_predict(tmp_path, bare, sample, "max_heatmaps=0")
    assert "no OK/NG threshold" in caplog.text and "no OK/NG threshold" in summary["message"]
    assert summary["threshold"] is None and summary["decisions"] == {"OK": 0, "NG": 0, "INVALID": 0}
    assert rows[0]["decision"] == "" and rows[0]["normalised"] == "" and float(rows[0]["score"]) > -1e9
    assert not (tmp_path / "run" / "heatmaps").exists()


def test_user_errors_end_in_one_line_and_leave_no_outputs(tmp_path, tiny_run, capsys):
    sample = copy_sample(tiny_run, "can_0007_OK", tmp_path / "part")
    (sample / "C5.jpg").unlink()
    expected = r"^error: Sample .*part lacks view\(s\) C5: the model expects[^\n]*\n$"
    with pytest.raises(SystemExit) as stopped, user_errors():  # by default: an INVALID row instead
        run_predict(tmp_path, tiny_run.checkpoint, sample, "strict=true")
    assert stopped.value.code == 2
    assert re.match(expected, capsys.readouterr().err)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_fast_settings_score_close_to_the_exact_path(tmp_path, tiny_run):
    split_json = tiny_run.data_root / "realiad_jsons" / "can.json"
    _, exact = run_predict(tmp_path / "exact", tiny_run.checkpoint, split_json, "heatmaps=false")
    # 6 samples x 5 views a batch: 10 chunks, two at a time
    fast_backbone = ("backbone_freeze=true", "backbone_chunk=3", "backbone_streams=2")
    summary, fast = run_predict(
        tmp_path / "fast", tiny_run.checkpoint, split_json, "heatmaps=false", *fast_backbone
    )
    _, bf16 = run_predict(
        tmp_path / "bf16", tiny_run.checkpoint, split_json, "heatmaps=false", "flow_conv_dtype=bfloat16"
    )
    assert summary["n_samples"] == len(fast) == len(exact) == len(bf16) == 6
    for a, b, c in zip(exact, fast, bf16, strict=True):
        assert a["key"] == b["key"] == c["key"]
        scores = [float(a[f"score_{v}"]) for v in VIEWS]
        assert [float(b[f"score_{v}"]) for v in VIEWS] == pytest.approx(scores, rel=1e-3, abs=1e-3)
        bf16_scores = [float(c[f"score_{v}"]) for v in VIEWS]
        assert bf16_scores != scores  # the flow's convolutions did run in bfloat16 ...
        assert bf16_scores == pytest.approx(scores, rel=3e-2, abs=3e-2)  # ... 8 significant bits


def test_bfloat16_flow_on_a_cpu_without_bf16_instructions_warns(tmp_path, tiny_run, monkeypatch, caplog):
    from multiflow_pl.utils import machine

    sample = copy_sample(tiny_run, "can_0007_OK", tmp_path / "part")
    for name, isa in (("plain", {"avx2", "fma"}), ("amx", {"avx2", "amx_bf16"})):
        monkeypatch.setattr(machine, "cpu_flags", lambda isa=isa: isa)
        caplog.clear()
        with caplog.at_level("WARNING", logger="multiflow_pl.predict"):
            summary, _ = run_predict(tmp_path / name, tiny_run.checkpoint, sample, "flow_conv_dtype=bfloat16")
        emulated = [r for r in caplog.records if "has neither AMX nor AVX-512 bf16" in r.getMessage()]
        assert len(emulated) == (name == "plain")
        assert summary["speed"]["flow_conv_dtype"] == "bfloat16"


def test_fast_backbone_chunks_and_freezes_the_extractor():
    from multiflow_pl.models.backbone import FeatureExtractor
    from multiflow_pl.speed.fast_backbone import FastBackbone

    backbone = FeatureExtractor("resnet18", ["layer2"], input_size=64).eval()
    assert FastBackbone.configured(backbone, False, None) is backbone  # the exact eager path
    with pytest.raises(ValueError, match="backbone_chunk"):
        FastBackbone(backbone, freeze=False, chunk=0)
    with pytest.raises(ValueError, match="backbone_freeze"):
        FastBackbone.configured(backbone, "yes", None)
    fast = FastBackbone.configured(backbone, "auto", 2)  # auto: frozen on CPU
    assert isinstance(fast, FastBackbone) and fast.frozen
    assert isinstance(fast.model, torch.jit.ScriptModule)
    assert (fast.input_size, fast.feature_size, fast.out_channels) == (64, (8, 8), 128)
    chunked = FastBackbone(backbone, freeze=False, chunk=2)
    for n in (1, 3, 7):  # batch sizes other than the traced one, and a partial last chunk
        images = torch.rand(n, 3, 64, 64)
        expected = backbone(images)
        torch.testing.assert_close(chunked(images), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast(images), expected, rtol=1e-4, atol=1e-4)


def test_backbone_streams_run_chunks_on_threads_of_one_intra_op_thread_each():
    from multiflow_pl.models.backbone import FeatureExtractor
    from multiflow_pl.speed.fast_backbone import FastBackbone

    backbone = FeatureExtractor("resnet18", ["layer2"], input_size=64).eval()
    with pytest.raises(ValueError, match="backbone_streams=2 with backbone_chunk=None"):
        FastBackbone.configured(backbone, False, None, 2)
    with pytest.raises(ValueError, match="backbone_streams=0"):
        FastBackbone(backbone, freeze=False, chunk=2, streams=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert FastBackbone.configured(backbone, False, 2, "auto").streams == 3  # torch's thread count
        assert FastBackbone.configured(backbone, True, None, "auto").streams == 1  # no chunks to share
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="backbone_streams='many'"):
        FastBackbone.configured(backbone, False, 2, "many")
    streams = FastBackbone.configured(backbone, False, 2, 2)  # eager, so the threads' counts can be seen
    one_thread = FastBackbone(backbone, freeze=False, chunk=2)
    seen: list[tuple[str, int]] = []

    def record(module, inputs):
        seen.append((threading.current_thread().name, torch.get_num_threads()))

    hook = backbone.register_forward_pre_hook(record)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        images = torch.rand(7, 3, 64, 64)  # 4 chunks, the last partial
        features = streams(images)
        assert torch.get_num_threads() == 2  # restored for the flow that follows
        assert len(seen) == 4 and all(name.startswith("backbone") and n == 1 for name, n in seen)
        seen.clear()
        torch.set_num_threads(1)
        torch.testing.assert_close(features, one_thread(images), rtol=0, atol=0)  # each chunk on one thread
        assert len(seen) == 4 and all(name == "MainThread" for name, _ in seen)
    finally:
        hook.remove()
        torch.set_num_threads(threads)
