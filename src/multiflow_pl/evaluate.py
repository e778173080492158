"""Re-evaluate a checkpoint: ``python -m multiflow_pl.evaluate ckpt_path=PATH [data.root=...]``.

The model, backbone and data settings are read from the checkpoint (saved by ``multiflow_pl.train``);
``data.*`` given on the command line override the saved data settings, e.g. to test on another copy of
the data.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from multiflow_pl.config import config_dir
from multiflow_pl.errors import user_errors
from multiflow_pl.models.checkpoint import load_checkpoint_config, load_module_state
from multiflow_pl.pipeline import build_data_and_model, build_trainer, test_and_export


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint ``cfg.ckpt_path`` on the saved (or overridden) data; returns the metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    checkpoint = torch.load(Path(cfg.ckpt_path), map_location="cpu", weights_only=True)
    saved = load_checkpoint_config(checkpoint, cfg.ckpt_path)
    run_cfg = OmegaConf.merge(saved, {"data": cfg.get("data") or {}, "paths": cfg.paths})
    run_cfg.backbone.pretrained = False  # the weights come from the checkpoint
    run_cfg.backbone.weights_file = None
    datamodule, module = build_data_and_model(run_cfg)
    load_module_state(module, checkpoint, cfg.ckpt_path)
    trainer = build_trainer(OmegaConf.merge(run_cfg, {"trainer": cfg.trainer, "logger": cfg.get("logger")}))
    return test_and_export(trainer, module, datamodule, Path(cfg.paths.output_dir), run_cfg.get("seed"))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the sample AUROC."""
    with user_errors():
        return evaluate(cfg).get("sample_auroc")


if __name__ == "__main__":
    main()
