"""Train Multi-Flow on one category and test it: ``python -m multiflow_pl.train [overrides]``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig

from multiflow_pl.cli import entry_point
from multiflow_pl.config import config_dir
from multiflow_pl.pipeline import build_data_and_model, build_trainer, evaluate_on_test_set

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Fit (unless ``train=false``) and test (unless ``test=false``); returns the test metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, module = build_data_and_model(cfg)
    trainer = build_trainer(cfg)
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if not cfg.get("test", True):
        return {}
    return evaluate_on_test_set(trainer, module, datamodule, Path(cfg.paths.output_dir), cfg.get("seed"))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the sample AUROC (for sweepers that optimise it)."""
    with entry_point():
        return train(cfg).get("sample_auroc")


if __name__ == "__main__":
    main()
