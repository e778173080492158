"""Re-evaluate a checkpoint: ``python -m multiflow_pl.evaluate ckpt_path=PATH [+data.root=...]``.

The model, backbone and data settings are read from the checkpoint (saved by ``multiflow_pl.train``);
``+data.*`` given on the command line (with the ``+``: eval.yaml holds no data keys of its own) override
the saved data settings, e.g. to test on another copy of the data. Trainer, loggers and callbacks are this
run's own (``conf/eval.yaml``): everything, W&B included, is written into the evaluation's run folder,
never into the training run's.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from multiflow_pl.cli import entry_point
from multiflow_pl.config import config_dir
from multiflow_pl.models.checkpoint import backbone_config, load_checkpoint_config, load_module_state
from multiflow_pl.pipeline import build_data_and_model, build_trainer, evaluate_on_test_set, read_checkpoint


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint ``cfg.ckpt_path`` on the saved (or overridden) data; returns the metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    checkpoint = read_checkpoint(cfg.ckpt_path)
    saved = load_checkpoint_config(checkpoint, cfg.ckpt_path)
    run_cfg = OmegaConf.merge(saved, {"data": cfg.get("data") or {}, "paths": cfg.paths})
    run_cfg.backbone = backbone_config(run_cfg, checkpoint)
    # This run's own trainer, loggers and callbacks: the saved ones point into the training run's folder.
    for key in ("trainer", "logger", "callbacks"):
        run_cfg[key] = cfg.get(key)
    datamodule, module = build_data_and_model(run_cfg)
    load_module_state(module, checkpoint, cfg.ckpt_path)
    trainer = build_trainer(run_cfg)
    return evaluate_on_test_set(trainer, module, datamodule, Path(cfg.paths.output_dir), run_cfg.get("seed"))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the sample AUROC."""
    with entry_point():
        return evaluate(cfg).get("sample_auroc")


if __name__ == "__main__":
    main()
