"""Sweeps and their report: sweep / launcher / DDP configs compose, and a multirun folder becomes
per-category and mean tables (Markdown, CSV) and a bar plot."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from multiflow_pl.config import config_dir
from multiflow_pl.data.realiad import CATEGORIES
from multiflow_pl.report import (
    collect_runs,
    defect_metrics,
    main,
    parse_overrides,
    varied_keys,
    write_report,
)

BASE = {"a": 0.6, "b": 0.8}
GRAPH_GAIN = {"top_ring": 0.1, "none": 0.0}


def _sample_auroc(category: str, graph: str, seed: int) -> float:
    return BASE[category] + GRAPH_GAIN[graph] + 0.02 * seed


@pytest.fixture
def multirun(tmp_path):
    """A fake multirun folder: 2 categories x 2 graphs x 2 seeds, numbered like Hydra's job folders."""
    sweep = tmp_path / "2026-01-01_00-00-00"
    job = 0
    for category in BASE:
        for graph in GRAPH_GAIN:
            for seed in (0, 1):
                run = sweep / str(job)
                (run / ".hydra").mkdir(parents=True)
                overrides = [
                    f"data.category={category}",
                    f"model.flow.graph={graph}",
                    f"seed={seed}",
                    "+experiment=synthetic_sweep",
                    "trainer.max_epochs=4",
                ]
                (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
                metrics = {
                    "category": category,
                    "seed": seed,
                    "sample_auroc": _sample_auroc(category, graph, seed),
                    "pixel_ap": None,  # undefined metric (null in metrics.json)
                    "sample_auroc_XV": _sample_auroc(category, graph, seed) - 0.1,
                }
                (run / "metrics.json").write_text(json.dumps(metrics))
                job += 1
    (sweep / "multirun.yaml").write_text("{}\n")
    return sweep


def test_overrides_are_parsed_without_prefixes():
    assert parse_overrides(["+experiment=x", "++a.b=1", "~c", "d=e=f"]) == {
        "experiment": "x",
        "a.b": "1",
        "c": "",
        "d": "e=f",
    }


def test_runs_are_grouped_by_the_varied_overrides_other_than_category_and_seed(multirun):
    runs = collect_runs(multirun)
    assert len(runs) == 8 and {run.category for run in runs} == {"a", "b"}
    assert varied_keys(runs) == ["model.flow.graph"]


def test_report_tables_hold_mean_and_std_over_seeds(multirun, tmp_path):
    report = write_report(multirun, tmp_path / "out", metrics=("sample_auroc", "pixel_ap"))
    cell = next(
        r for r in report.per_category if r["category"] == "a" and r["setting"] == "model.flow.graph=none"
    )
    values = [_sample_auroc("a", "none", seed) for seed in (0, 1)]
    assert cell["n_seeds"] == 2
    assert cell["sample_auroc_mean"] == pytest.approx(np.mean(values))
    assert cell["sample_auroc_std"] == pytest.approx(np.std(values, ddof=1))
    assert math.isnan(cell["pixel_ap_mean"])

    mean_row = next(r for r in report.summary if r["setting"] == "model.flow.graph=top_ring")
    per_seed = [np.mean([_sample_auroc(c, "top_ring", seed) for c in BASE]) for seed in (0, 1)]
    assert mean_row["n_categories"] == 2 and mean_row["category"] == "mean"
    assert mean_row["sample_auroc_mean"] == pytest.approx(np.mean(per_seed))
    assert mean_row["sample_auroc_std"] == pytest.approx(np.std(per_seed, ddof=1))

    text = report.markdown.read_text()
    assert "| model.flow.graph=top_ring | 2 | 2 | 81.0 ± 1.4 | n/a |" in text
    assert "`experiment=synthetic_sweep`" in text and "`trainer.max_epochs=4`" in text
    with report.per_category_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {"setting", "category", "sample_auroc_mean", "sample_auroc_std"} <= set(rows[0])
    with report.summary_csv.open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert Image.open(report.plot).size[0] > 400


def test_report_adds_per_defect_type_tables(multirun, tmp_path):
    assert defect_metrics(collect_runs(multirun)) == ["sample_auroc_XV"]
    text = write_report(multirun, tmp_path / "out").markdown.read_text()
    per_defect = text.split("## Sample AUROC per defect type, mean over categories")[1]
    # top_ring, mean over categories per seed: (0.6 + 0.8) / 2 + 0.1 - 0.1 = 0.70 and 0.72
    assert "| model.flow.graph=top_ring | 2 | 2 | 71.0 ± 1.4 |" in per_defect
    assert "| model.flow.graph=none | b | 2 | 71.0 ± 1.4 |" in per_defect.split("per category")[1]


def test_report_command_writes_into_the_multirun_folder(multirun, capsys):
    main([str(multirun)])
    assert "## Per category" in capsys.readouterr().out
    assert {"report.md", "per_category.csv", "summary.csv", "report.png"} <= {
        p.name for p in multirun.iterdir()
    }


def test_report_command_explains_an_empty_folder(tmp_path):
    with pytest.raises(SystemExit, match="No runs under"):
        main([str(tmp_path)])
    with pytest.raises(SystemExit, match="not a folder"):
        main([str(tmp_path / "missing")])


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def test_synthetic_sweep_is_three_categories_by_two_graphs_by_two_seeds():
    cfg = _compose(["+experiment=synthetic_sweep"])
    params = {key: value.split(",") for key, value in cfg.hydra.sweeper.params.items()}
    assert params == {
        "data.category": ["can", "box", "knob"],
        "model.flow.graph": ["top_ring", "none"],
        "seed": ["0", "1"],
    }
    assert cfg.data.generate is not None and cfg.backbone.name == "efficientnet_lite0"


@pytest.mark.parametrize(
    ("experiment", "axis"),
    [
        ("realiad_all", None),
        ("realiad_ablation_graph", "model.flow.graph"),
        ("realiad_ablation_noise", "model.flow.noise_channels"),
        ("realiad_ablation_masks", "data.foreground"),
        ("realiad_seeds", "seed"),
    ],
)
def test_realiad_sweeps_cover_all_30_categories_with_the_papers_setting(experiment, axis):
    cfg = _compose([f"+experiment={experiment}", "data.root=/x"])
    params = dict(cfg.hydra.sweeper.params)
    assert params.pop("data.category").split(",") == list(CATEGORIES)
    assert list(params) == ([axis] if axis else [])
    assert cfg.model.flow.n_blocks == 6 and cfg.trainer.max_epochs == 40


def test_slurm_launcher_and_ddp_trainers_compose():
    cfg = _compose(["+launcher=slurm", "trainer=ddp", "hydra.launcher.partition=gpu"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.launcher.timeout_min > 0
    assert (cfg.trainer.strategy, cfg.trainer.accelerator, cfg.trainer.devices) == ("ddp", "gpu", -1)
    cpu = _compose(["trainer=ddp_cpu"]).trainer
    assert (cpu.strategy, cpu.accelerator, cpu.devices) == ("ddp", "cpu", 2)
