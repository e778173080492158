"""The step-based schedule end to end: a tiny run from the command line stops on its validation NLL (or at
the cap), logs the NLL and the gates and plots them; attention messages train from the command line."""

from __future__ import annotations

import csv

import pytest
import torch
from helpers.runs import TINY_TRAIN, compose_config, run_cli
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from multiflow_pl.models.threshold import CHECKPOINT_KEY
from multiflow_pl.pipeline import build_module

STEPS = [
    *(o for o in TINY_TRAIN if not o.startswith(("schedule=", "trainer.max_epochs="))),
    "schedule=steps",
    "trainer.val_check_interval=2",  # 4 training samples in batches of 2: a check every epoch
]
"""The tiny run (:data:`TINY_TRAIN`) on the step-based schedule, checked every 2 steps."""

VIEWS = ("C1", "C2", "C3", "C4", "C5")


def _logged(run_dir) -> list[dict]:
    (metrics,) = run_dir.glob("csv/**/metrics.csv")
    with metrics.open() as f:
        return list(csv.DictReader(f))


def _train(root, *overrides: str) -> tuple[str, dict]:
    """Train the tiny step-based run with ``overrides`` from the command line, test it; returns its log
    and last checkpoint (which carries an OK/NG threshold)."""
    result = run_cli("train", root, *STEPS, *overrides)
    assert result.returncode == 0, result.stderr
    run_dir = root / "run"
    assert (run_dir / "metrics.json").is_file()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert CHECKPOINT_KEY in checkpoint
    return (run_dir / "train.log").read_text(), checkpoint


@pytest.mark.e2e
def test_training_stops_on_a_plateau_of_the_validation_nll(tmp_path):
    # min_delta so large that no check improves: a plateau after `patience` checks, held until the floor
    log, checkpoint = _train(
        tmp_path,
        "trainer.max_steps=40",
        "callbacks.early_stopping.min_steps=6",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1e9",
    )
    assert "Training stops at step 6: a plateau of the smoothed NLL" in log
    assert "step 2: validation NLL" in log and "step 4: validation NLL" in log
    assert checkpoint["global_step"] == 6
    rows = _logged(tmp_path / "run")
    gates = {f"gate/block{b}/{view}" for b in range(2) for view in VIEWS}
    assert {"val/nll", "val/nll_smoothed", *gates} <= set(rows[0])
    assert len([row for row in rows if row["val/nll"]]) == 3  # checks at steps 2, 4, 6
    assert all(float(row[f"gate/block0/{v}"]) > 0 for row in rows if row["val/nll"] for v in VIEWS)
    assert (tmp_path / "run" / "plots" / "training_curves.png").stat().st_size > 0


@pytest.mark.e2e
def test_cap_between_checks_gets_a_last_check_with_attention_messages(tmp_path):
    log, checkpoint = _train(
        tmp_path,
        "model.flow.messages=cross_attention",
        "trainer.max_steps=5",
        "callbacks.early_stopping.min_steps=1",
        "callbacks.early_stopping.patience=100",
    )
    assert "step 5: validation NLL" in log and "Training stops at step 5: the cap" in log
    assert checkpoint["global_step"] == 5
    assert any(".attention.in_weight" in key for key in checkpoint["state_dict"])
    assert checkpoint["multiflow_config"]["model"]["flow"]["messages"] == "cross_attention"


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_validation_nll_is_the_masked_loss_without_noise(tmp_path):
    """``val/nll`` is the training loss's masked NLL with cond=None, averaged over samples."""
    cfg = compose_config("train", tmp_path, STEPS)
    GlobalHydra.instance().clear()
    module = build_module(cfg, instantiate(cfg.backbone), 5)
    flow = module.model.flow
    with torch.no_grad():
        for gamma in (p for name, p in flow.named_parameters() if name.endswith("gamma")):
            gamma.fill_(0.5)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for size in (2, 1):
        features = torch.randn(size, 5, flow.channels, 4, 4, generator=generator)
        foreground = (torch.rand(size, 5, 4, 4, generator=generator) > 0.3).float()
        batches.append({"features": features, "foreground": foreground, "key": ["k"] * size})
        module.validation_step(batches[-1], 0)
    expected = sum(flow.loss(b["features"], b["foreground"]) * len(b["key"]) for b in batches) / 3
    torch.testing.assert_close(module.val_nll.compute(), expected)
    unmasked = sum(flow.nll(b["features"]).mean() * len(b["key"]) for b in batches) / 3
    assert not torch.allclose(module.val_nll.compute(), unmasked)
