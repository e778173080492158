"""Exports: Real-IAD prediction pickles (format of the official tool), CSV tables, and what a training run
leaves behind through its callbacks (predictions, plots, W&B offline run with config, images and table)."""

from __future__ import annotations

import csv
import json
import pickle
from numbers import Real
from pathlib import Path

import numpy as np
import pytest
import wandb
from helpers.runs import compose_config
from hydra.core.global_hydra import GlobalHydra
from test_pipeline import TINY_DATA

from multiflow_pl.evaluation.writers import write_csv, write_realiad_predictions
from multiflow_pl.train import train
from multiflow_pl.utils.loggers import REDACTED


def assert_adeval_format(predictions: object) -> None:
    """The checks the official tool (ADEval's ``load_anomap``) makes before evaluating a pickle."""
    assert isinstance(predictions, dict)
    assert all(isinstance(key, str) for key in predictions)
    for anomaly_map, score, mask_path in predictions.values():
        assert (
            isinstance(anomaly_map, np.ndarray)
            and anomaly_map.ndim == 2
            and "float" in anomaly_map.dtype.name
        )
        assert isinstance(score, Real) and not np.isnan(score)
        assert mask_path is None or isinstance(mask_path, str)


def test_prediction_pickle_from_memmap_rows(tmp_path):
    maps = np.lib.format.open_memmap(tmp_path / "maps.npy", mode="w+", dtype=np.float32, shape=(3, 4, 4))
    maps[:] = np.arange(48, dtype=np.float32).reshape(3, 4, 4)
    paths = ["OK/S0001/a_C1_.jpg", "NG/HS/S0001/b_C1_.jpg", "NG/HS/S0001/b_C2_.jpg"]
    masks = [None, "NG/HS/S0001/b_C1_.png", None]
    out = write_realiad_predictions(tmp_path / "p" / "cat.pkl", paths, list(maps), [0.1, 2.0, 0.5], masks)
    with out.open("rb") as handle:
        loaded = pickle.load(handle)
    assert_adeval_format(loaded)
    assert list(loaded) == paths
    assert [loaded[p][1] for p in paths] == [0.1, 2.0, 0.5] and [loaded[p][2] for p in paths] == masks
    np.testing.assert_array_equal(loaded[paths[2]][0], maps[2])
    assert sorted(p.name for p in out.parent.iterdir()) == ["cat.pkl"]  # no temporary file left


@pytest.mark.parametrize(
    ("paths", "maps", "scores", "match"),
    [
        (["a", "a"], [np.zeros((2, 2))] * 2, [0.0, 0.0], "unique"),
        (["a"], [np.zeros((2, 2, 2))], [0.0], "2-D float"),
        (["a"], [np.zeros((2, 2), dtype=np.int64)], [0.0], "2-D float"),
        (["a"], [np.zeros((2, 2))], [float("nan")], "finite"),
        (["a", "b"], [np.zeros((2, 2))], [0.0], "one of each"),
    ],
)
def test_prediction_pickle_refuses_what_the_official_tool_cannot_read(tmp_path, paths, maps, scores, match):
    with pytest.raises(ValueError, match=match):
        write_realiad_predictions(tmp_path / "x.pkl", paths, maps, scores, [None] * len(paths))
    assert not (tmp_path / "x.pkl").exists()


def test_csv_columns_are_the_union_of_row_keys(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"a": 1}, {"a": 2, "b": 3}])
    assert path.read_text().splitlines() == ["a,b", "1,", "2,3"]


@pytest.fixture
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    wandb.finish()
    GlobalHydra.instance().clear()


@pytest.mark.e2e
def test_training_run_leaves_predictions_plots_and_an_offline_wandb_run(tmp_path, offline_wandb):
    overrides = [o for o in TINY_DATA if not o.startswith("logger=")]  # default loggers: CSV + W&B offline
    cfg = compose_config("train", tmp_path, [*overrides, "trainer.max_epochs=1", "+notes.api_key=hunter2"])
    metrics = train(cfg)
    run = tmp_path / "run"

    # predictions/<category>.pkl: one entry per test view image, keyed as in the dataset's JSON
    with (run / "predictions" / "can.pkl").open("rb") as handle:
        predictions = pickle.load(handle)
    assert_adeval_format(predictions)
    meta = json.loads((tmp_path / "data" / "synthetic" / "realiad_jsons" / "can.json").read_text())
    json_masks = {entry["image_path"]: entry["mask_path"] for entry in meta["test"]}
    category_folder = tmp_path / "data" / "synthetic" / "realiad_64" / "can"
    with (run / "view_scores.csv").open() as handle:
        view_scores = {
            Path(row["image_path"]).relative_to(category_folder).as_posix(): float(row["image_score"])
            for row in csv.DictReader(handle)
        }
    assert set(predictions) == set(view_scores) and len(predictions) == 6 * 5
    for image_path, (anomaly_map, score, mask_path) in predictions.items():
        assert mask_path == json_masks[image_path]
        assert score == pytest.approx(view_scores[image_path], rel=1e-6)
        assert anomaly_map.shape == (64, 64) and anomaly_map.dtype == np.float32
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["can.pkl"]  # spool removed

    plots = {p.name for p in (run / "plots").iterdir()}
    assert {
        "roc.png",
        "score_histograms.png",
        "samples_top_anomalous.png",
        "samples_lowest_normal.png",
    } <= plots

    # W&B: offline, config without secrets, the images and a results table
    assert wandb.run is not None and wandb.run.offline
    assert wandb.run.name == "can-top_ring-s0"
    logged = dict(wandb.run.config)
    assert logged["data"]["category"] == "can" and logged["notes"]["api_key"] == REDACTED
    assert "+notes.api_key=" + REDACTED in logged["overrides"] and "hunter2" not in json.dumps(logged)
    media = next((run / "wandb").glob("offline-run-*")) / "files" / "media"
    assert any((media / "images" / "test").glob("roc_*.png"))
    table = json.loads(next((media / "table" / "test").glob("results_*.table.json")).read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert row["category"] == "can" and row["sample_auroc"] == pytest.approx(metrics["sample_auroc"])
    assert "hunter2" not in (run / "csv" / "version_0" / "hparams.yaml").read_text()
