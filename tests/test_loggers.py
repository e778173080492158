"""W&B logger: offline, one run per multirun job grouped by sweep; logged configs carry no secrets."""

from __future__ import annotations

import pytest
import wandb
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from multiflow_pl.config import config_dir
from multiflow_pl.utils.loggers import REDACTED, make_wandb_logger, public_config


@pytest.fixture
def hydra_job(tmp_path, monkeypatch):
    """``hydra_job(mode)`` sets Hydra's runtime config as in a job of a run or a multirun."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")

    def set_job(mode: str) -> None:
        GlobalHydra.instance().clear()
        overrides = [f"hydra.mode={mode}", f"hydra.sweep.dir={tmp_path / 'ablation_7'}", "hydra.job.num=3"]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)

    yield set_job
    wandb.finish()
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def test_multirun_jobs_are_grouped_by_sweep_and_numbered(hydra_job, tmp_path):
    hydra_job("MULTIRUN")
    logger = make_wandb_logger(name="can-top_ring-s0", project="p", save_dir=str(tmp_path))
    assert logger._wandb_init["group"] == "ablation_7" and logger._wandb_init["name"] == "can-top_ring-s0-j3"
    assert logger._offline
    explicit = make_wandb_logger(name="x", group="mine", save_dir=str(tmp_path))
    assert explicit._wandb_init["group"] == "mine"


def test_single_runs_have_no_group_and_each_logger_gets_its_own_run(hydra_job, tmp_path):
    hydra_job("RUN")
    first = make_wandb_logger(name="a", save_dir=str(tmp_path))
    assert first._wandb_init["group"] is None and first._wandb_init["name"] == "a"
    first_run = first.experiment
    assert first_run.offline
    second = make_wandb_logger(name="b", save_dir=str(tmp_path))  # finishes the run left open by ``first``
    assert wandb.run is None
    assert second.experiment.id != first_run.id and second.experiment.name == "b"


def test_public_config_redacts_secret_looking_keys_at_any_depth():
    config = OmegaConf.to_container(
        OmegaConf.create(
            {"a": {"api_key": "k", "WANDB_TOKEN": "t", "ok": [{"password": "p", "n": 1}]}, "b": 2}
        )
    )
    cleaned = public_config(config)
    assert cleaned == {
        "a": {"api_key": REDACTED, "WANDB_TOKEN": REDACTED, "ok": [{"password": REDACTED, "n": 1}]},
        "b": 2,
    }
    assert config["a"]["api_key"] == "k"  # the original is left as it was
