"""Every experiment, trainer, logger, debug and launcher config composes and instantiates: data module,
backbone, model, trainer, loggers and callbacks (and the launcher plugin), with tiny overrides.

Tiny overrides: the data come from a small synthetic benchmark in Real-IAD layout (also for the Real-IAD
experiments, whose root it replaces; category ``can``), images and maps are 64 px, and backbones are
random-init (``backbone.pretrained=false``: the paper's EfficientNet-B5 weights would come from the network).
Configs for GPUs build their Trainer only where a GPU is present; elsewhere their composition is checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.runs import compose_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from multiflow_pl.config import config_dir
from multiflow_pl.data.synthetic import generate
from multiflow_pl.pipeline import build_data_and_model, build_trainer

pytestmark = pytest.mark.e2e  # builds and runs every shipped config (data, model, trainer) end to end

PREFIX = {"experiment": "+experiment", "debug": "+debug", "launcher": "+launcher"}
"""How a group is chosen on the command line (groups without a default are added with +)."""


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


CASES = [
    (group, name)
    for group in ("experiment", "trainer", "logger", "debug", "launcher")
    for name in options(group)
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_realiad")
    return generate(root, categories=["can"], n_train=5, n_test=6, size=64, progress=False)


def tiny_overrides(data_root: Path) -> list[str]:
    return [
        f"data.root={data_root}",
        "data.category=can",
        "data.resolution=64",
        "++data.generate=null",  # the synthetic source renders none; the others have no generator
        "data.eval_size=64",
        "data.num_workers=0",
        "data.cache.num_workers=0",
        "data.pin_memory=false",
        "backbone.input_size=64",
        "backbone.pretrained=false",
        "backbone.weights_file=null",
    ]


def sweep_overrides(overrides: list[str], tmp_path: Path) -> list[str]:
    """For a sweep: each axis at its last value (job 0 gets the first ones, mostly the defaults), except
    the category (the tiny data set has only ``can``)."""
    params = OmegaConf.select(hydra_config(tmp_path, overrides), "sweeper.params") or {}
    return [f"{key}={str(values).split(',')[-1]}" for key, values in params.items() if key != "data.category"]


@pytest.mark.parametrize(("group", "name"), CASES, ids=[f"{g}={n}" for g, n in CASES])
def test_config_instantiates(group, name, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    chosen = [f"{PREFIX.get(group, group)}={name}"]
    if group == "launcher":  # as README runs it: the 30-category sweep on SLURM
        chosen += ["+experiment=realiad_all", "hydra.launcher.partition=gpu"]
    overrides = [*chosen, *tiny_overrides(tiny_data)]
    overrides += sweep_overrides(overrides, tmp_path)
    if group == "launcher":
        launcher = instantiate(hydra_config(tmp_path, overrides).launcher)
        assert type(launcher).__name__ == "SlurmLauncher"
    cfg = compose_config("train", tmp_path, overrides)

    datamodule, module = build_data_and_model(cfg)
    assert datamodule.category == "can" and len(datamodule.index("train")) > 0
    assert module.model.flow.n_views == 5 and sum(p.numel() for p in module.model.flow.parameters()) > 0
    ddp = cfg.trainer.get("strategy") == "ddp"
    if ddp:
        assert cfg.trainer.num_nodes >= 1 and cfg.trainer.devices != 0 and cfg.trainer.use_distributed_sampler
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer._target_ == "lightning.pytorch.trainer.Trainer"
        for key in ("logger", "callbacks"):  # all but the Trainer itself
            assert all(instantiate(c) is not None for c in (cfg.get(key) or {}).values() if c is not None)
        return
    trainer = build_trainer(cfg)
    assert Path(trainer.default_root_dir) == tmp_path / "run"
    assert bool(trainer.fast_dev_run) == bool(cfg.trainer.get("fast_dev_run"))
    assert len(trainer.loggers) == len([c for c in (cfg.get("logger") or {}).values() if c is not None])
    if ddp:  # built, not launched: the processes start only in fit / test
        devices = cfg.trainer.devices if cfg.trainer.devices > 0 else torch.cuda.device_count()
        assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.world_size == devices


def hydra_config(tmp_path: Path, overrides: list[str]):
    """The composed ``hydra`` node (launcher, sweeper) for ``overrides``, with Hydra's runtime config set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg.hydra


def test_realiad_experiment_extracts_as_the_reference(tiny_data, tmp_path):
    """B5 padded for a 456-px build, float32, PIL's 8-bit resize; the synthetic default: float resize."""
    cfg = compose_config("train", tmp_path, ["+experiment=realiad", *tiny_overrides(tiny_data)])
    datamodule, module = build_data_and_model(cfg)
    backbone = module.model.backbone
    assert (backbone.static_padding_size, backbone.precision, datamodule.resize) == (456, "float32", "pil")
    assert backbone.cache_signature()["static_padding_size"] == 456
    demo = compose_config("train", tmp_path, [])
    assert demo.data.resize == "float" and "static_padding_size" not in demo.backbone
