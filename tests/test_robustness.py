"""Bad input never crashes obscurely or mis-scores silently: each case stops with a message naming the
problem, or is recovered from. Cases already covered elsewhere: Real-IAD/own-rig readers (missing and
extra views, test_realiad.py / test_folder.py), a truncated feature cache (test_features.py).
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import compose_config
from hydra.utils import instantiate
from PIL import Image

from multiflow_pl.data.dataset import MultiViewImageDataset
from multiflow_pl.data.errors import DatasetError
from multiflow_pl.data.features import FeatureCache
from multiflow_pl.data.sample import MultiViewSample, ViewRecord
from multiflow_pl.errors import user_errors
from multiflow_pl.lightning_module import MultiFlowModule
from multiflow_pl.models.backbone import FeatureExtractor
from multiflow_pl.models.checkpoint import CheckpointError, load_module_state
from multiflow_pl.models.threshold import CHECKPOINT_KEY
from multiflow_pl.pipeline import build_module, load_trained_module
from multiflow_pl.predict import predict
from multiflow_pl.train import train

SOURCES = Path(__file__).resolve().parents[1] / "src" / "multiflow_pl"
VIEWS = ["C1", "C2", "C3", "C4", "C5"]


def sample_folder(tiny_run, folder: Path, key: str = "can_0007_OK") -> Path:
    """The five views of a test sample as ``folder/<view>.png`` (lossless copies of the decoded images)."""
    folder.mkdir(parents=True, exist_ok=True)
    for image in (tiny_run.data_root / "realiad_64" / "can").rglob(f"{key}_C*.jpg"):
        view = image.name[len(key) + 1 :].split("_")[0]
        Image.open(image).convert("RGB").save(folder / f"{view}.png")
    return folder


def run_predict(tmp_path: Path, tiny_run, source: Path, *overrides: str) -> tuple[dict, dict[str, dict]]:
    cfg = compose_config(
        "predict",
        tmp_path,
        [f"ckpt_path={tiny_run.checkpoint}", f"input={source}", "heatmaps=false", *overrides],
    )
    summary = predict(cfg)
    with open(tmp_path / "run" / "scores.csv") as handle:
        return summary, {row["key"]: row for row in csv.DictReader(handle)}


# --- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "not_an_image"])
def test_unreadable_image_under_strict_names_the_file_and_leaves_no_outputs(tmp_path, tiny_run, damage):
    """strict=true (predict's default scores the other samples: tests/test_invalid_samples.py)."""
    incoming = tmp_path / "incoming"
    sample_folder(tiny_run, incoming / "part_a")
    bad = sample_folder(tiny_run, incoming / "part_b") / "C2.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"no image here")
    with pytest.raises(DatasetError, match=re.escape(f"Cannot read image {bad}")):
        run_predict(tmp_path, tiny_run, incoming, "batch_size=1", "strict=true")
    run = tmp_path / "run"
    assert not run.exists() or not any(run.iterdir())  # no scores.csv, no staging folder


def test_extra_view_is_refused_naming_the_file(tmp_path, tiny_run):
    folder = sample_folder(tiny_run, tmp_path / "part")
    shutil.copy(folder / "C1.png", folder / "C6.png")
    with pytest.raises(DatasetError, match=r"has image\(s\) C6.png of views the model was not trained on"):
        run_predict(tmp_path, tiny_run, folder)


def test_split_with_another_view_count_is_refused(tmp_path, tiny_run):
    meta = json.loads((tiny_run.data_root / "realiad_jsons" / "can.json").read_text())
    meta["test"] = [entry for entry in meta["test"] if "_C1_" in entry["image_path"]]
    single_view = tmp_path / "realiad_jsons_sv" / "can.json"
    single_view.parent.mkdir()
    single_view.write_text(json.dumps(meta))
    with pytest.raises(
        DatasetError, match=r"have views C1 but checkpoint .* was trained on C1, C2, C3, C4, C5"
    ):
        run_predict(tmp_path, tiny_run, single_view, f"root={tiny_run.data_root}")


def test_other_sizes_channel_counts_and_grayscale_are_converted(tmp_path, tiny_run):
    incoming = tmp_path / "incoming"
    original = sample_folder(tiny_run, incoming / "original")
    variants = {
        name: shutil.copytree(original, incoming / name) for name in ("rgba", "large", "gray", "gray_rgb")
    }
    variants["gray16"] = shutil.copytree(original, incoming / "gray16")
    with Image.open(original / "C3.png") as image:
        image.convert("RGBA").save(variants["rgba"] / "C3.png")  # 4 channels, opaque
        image.resize((150, 110)).save(variants["large"] / "C3.png")  # another size and aspect
        gray = np.asarray(image.convert("L"))
    Image.fromarray(gray).save(variants["gray"] / "C3.png")  # 1 channel
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(variants["gray_rgb"] / "C3.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(variants["gray16"] / "C3.png")  # 16-bit
    assert Image.open(variants["gray16"] / "C3.png").mode.startswith("I")

    _, rows = run_predict(tmp_path, tiny_run, incoming, "batch_size=1")
    score = {key: [float(row[f"score_{v}"]) for v in VIEWS] for key, row in rows.items()}
    assert score["rgba"] == score["original"]
    assert score["gray"] == score["gray_rgb"]
    assert score["gray16"] == pytest.approx(score["gray"], rel=1e-5)
    assert score["gray"] != score["original"]
    assert all(math.isfinite(s) for s in score["large"]) and rows["large"]["decision"] in ("OK", "NG")


# --- checkpoints ----------------------------------------------------------------------------------


def test_checkpoint_of_another_view_count_or_flow_size_is_refused(tiny_run):
    module, run_cfg, checkpoint = load_trained_module(tiny_run.checkpoint)
    three_views = build_module(run_cfg, module.model.backbone, n_views=3)
    with pytest.raises(CheckpointError, match=r"does not fit this model configuration.*view count"):
        load_module_state(three_views, checkpoint, tiny_run.checkpoint)
    run_cfg.model.flow.hidden = 16
    wider = build_module(run_cfg, instantiate(run_cfg.backbone), n_views=5)
    with pytest.raises(CheckpointError, match=r"shape mismatches \(e.g. model\.flow\."):
        load_module_state(wider, checkpoint, tiny_run.checkpoint)


class _Payload:
    """Unpickling this would create ``self.marker``: a stand-in for code hidden in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_foreign_damaged_and_malicious_checkpoints_are_refused(tmp_path, tiny_run):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="has no multiflow_config"):
        load_trained_module(foreign)
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(tiny_run.checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"Cannot load checkpoint .*damaged\.ckpt"):
        load_trained_module(damaged)
    malicious = tmp_path / "malicious.ckpt"
    torch.save({"multiflow_config": {}, "payload": _Payload(tmp_path / "pwned")}, malicious)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_trained_module(malicious)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_trained_module(tmp_path / "missing.ckpt")


# --- feature cache --------------------------------------------------------------------------------


def test_stale_cache_entry_with_another_shape_is_rebuilt(tmp_path, write_image):
    extractor = FeatureExtractor("resnet18", ["layer1"], input_size=32)
    views = tuple(
        ViewRecord(v, write_image(tmp_path / f"{v}.png", size=40), None, 0, "OK") for v in VIEWS[:2]
    )
    dataset = MultiViewImageDataset([MultiViewSample("s", "toy", 0, views)], 32, 0, extractor.feature_size)
    cache = FeatureCache(tmp_path / "cache", show_progress=False)
    good = np.array(cache.load_or_build(extractor, dataset)[0])
    features_file = next((tmp_path / "cache").glob("*.features.npy"))
    np.save(features_file, np.zeros((1, 2, 3, 4, 5), np.float16))  # e.g. written by an older version
    with pytest.warns(UserWarning, match="stale"):
        rebuilt, _ = cache.load_or_build(extractor, dataset)
    assert np.array_equal(np.asarray(rebuilt), good)


# --- NaN ------------------------------------------------------------------------------------------


def test_nan_features_stop_training_naming_the_samples(tiny_run, capsys):
    module, _, _ = load_trained_module(tiny_run.checkpoint)
    features = torch.zeros(2, 5, module.model.flow.channels, *module.model.backbone.feature_size)
    features[1, 2, 0, 3, 3] = math.nan
    batch = {"features": features, "foreground": torch.ones(2, 5, *module.model.backbone.feature_size)}
    batch["key"] = ["part_ok", "part_nan"]
    with pytest.raises(FloatingPointError, match=r"Non-finite training loss .*'part_ok', 'part_nan'"):
        module.training_step(batch, 0)
    with pytest.raises(SystemExit) as stopped, user_errors():
        module.training_step(batch, 0)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("error: Non-finite training loss")


def test_nan_scores_at_prediction_are_flagged_invalid(tmp_path, tiny_run, monkeypatch, caplog):
    incoming = tmp_path / "incoming"
    sample_folder(tiny_run, incoming / "part_a")
    sample_folder(tiny_run, incoming / "part_b")
    forward = FeatureExtractor.forward

    def first_image_nan(self, images):
        features = forward(self, images)
        features[0] = math.nan
        return features

    monkeypatch.setattr(FeatureExtractor, "forward", first_image_nan)
    with caplog.at_level("WARNING"):
        summary, rows = run_predict(tmp_path, tiny_run, incoming, "batch_size=2")  # one batch, NaN in part_a
    assert rows["part_a"]["decision"] == "INVALID" and math.isnan(float(rows["part_a"]["score"]))
    assert rows["part_b"]["decision"] in ("OK", "NG") and math.isfinite(float(rows["part_b"]["score"]))
    assert summary["invalid_samples"] == ["part_a"] and summary["decisions"]["INVALID"] == 1
    assert "Non-finite scores (flagged INVALID) for samples ['part_a']" in caplog.text


# --- resume ---------------------------------------------------------------------------------------


def test_run_killed_mid_training_resumes_to_the_same_result(tmp_path, tiny_run, monkeypatch):
    shared = [
        f"paths.data_dir={tiny_run.root / 'data'}",
        f"paths.cache_dir={tiny_run.root / '.cache' / 'features'}",
    ]
    overrides = [*tiny_run.overrides, *shared]
    finish_epoch = MultiFlowModule.on_train_epoch_end

    def killed_in_second_epoch(self):
        if self.current_epoch == 1:  # before that epoch's checkpoint is written
            raise RuntimeError("simulated kill")
        finish_epoch(self)

    monkeypatch.setattr(MultiFlowModule, "on_train_epoch_end", killed_in_second_epoch)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(compose_config("train", tmp_path / "killed", overrides))
    monkeypatch.undo()
    last = tmp_path / "killed" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0

    resumed = train(compose_config("train", tmp_path / "resumed", [*overrides, f"ckpt_path={last}"]))
    assert resumed == tiny_run.metrics
    final = torch.load(tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    reference = torch.load(tiny_run.checkpoint, weights_only=True)
    assert final[CHECKPOINT_KEY] == reference[CHECKPOINT_KEY]
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name


# --- security -------------------------------------------------------------------------------------


def _call_arguments(text: str, call: str) -> list[str]:
    """The argument text of every ``call(...)`` in ``text`` (balanced parentheses)."""
    found = []
    for match in re.finditer(re.escape(call) + r"\(", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        found.append(text[match.end() : end - 1])
    return found


def test_sources_load_checkpoints_and_caches_without_pickle():
    for path in SOURCES.rglob("*.py"):
        text = path.read_text()
        for arguments in _call_arguments(text, "torch.load"):
            assert "weights_only=True" in arguments, path
        for arguments in _call_arguments(text, "np.load"):
            assert "allow_pickle" not in arguments, path
        assert not re.search(r"pickle\.loads?\(|Unpickler\(", text), path


def test_secrets_in_the_config_never_reach_the_checkpoint(tmp_path, tiny_run, monkeypatch):
    secret = "wandb-secret-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    _, run_cfg, checkpoint = load_trained_module(tiny_run.checkpoint)
    run_cfg.logger = {"wandb": {"api_key": "${oc.env:WANDB_API_KEY}"}}
    module = build_module(run_cfg, instantiate(run_cfg.backbone), n_views=5)
    assert module.run_config["logger"]["wandb"]["api_key"] == "<redacted>"
    saved = tmp_path / "saved.ckpt"
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, saved)
    assert secret.encode() not in saved.read_bytes()
    assert secret.encode() not in tiny_run.checkpoint.read_bytes()
