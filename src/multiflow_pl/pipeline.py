"""Building blocks shared by the entry points: instantiate components, test a model, write results."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from multiflow_pl.data.datamodule import MultiViewDataModule
from multiflow_pl.data.view_profile import view_profile
from multiflow_pl.evaluation.writers import write_metrics_json
from multiflow_pl.lightning_module import MultiFlowModule
from multiflow_pl.models.backbone import FeatureExtractor
from multiflow_pl.models.checkpoint import (
    CheckpointError,
    backbone_config,
    load_checkpoint_config,
    load_module_state,
)
from multiflow_pl.models.model import MultiFlowModel
from multiflow_pl.models.threshold import Threshold, threshold_from_checkpoint
from multiflow_pl.utils.loggers import public_config

log = logging.getLogger(__name__)

RESULT_KEYS = ("image_auroc", "sample_auroc", "sample_auroc_mean", "pixel_auroc", "pixel_ap", "pixel_aupro")


def build_data_and_model(cfg: DictConfig) -> tuple[MultiViewDataModule, MultiFlowModule]:
    """Data module, backbone (which the data module needs for its feature cache) and the LightningModule.

    The data is checked first (root, meta files, category), so a wrong ``data.root`` fails at once,
    before backbone weights are loaded or fetched.
    """
    datamodule: MultiViewDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    train_samples = datamodule.index("train")
    backbone = instantiate(cfg.backbone)
    datamodule.feature_extractor = backbone
    # evaluate, predict and export rebuild the model from this; predict flags images unlike the profile
    inputs = {"view_names": list(train_samples[0].view_names), "view_profile": view_profile(train_samples)}
    return datamodule, build_module(cfg, backbone, len(inputs["view_names"]), inputs)


def build_module(
    cfg: DictConfig, backbone: FeatureExtractor, n_views: int, inputs: dict | None = None
) -> MultiFlowModule:
    """The LightningModule for ``n_views`` views, keeping the resolved config (secrets redacted) and
    ``inputs`` (the training views' names and image profile) for its checkpoints."""
    run_config = public_config(OmegaConf.to_container(cfg, resolve=True))
    run_config["model"]["n_views"] = n_views
    run_config.update(inputs or {})
    # a partial first: instantiate would treat the _target_ keys inside run_config as objects to build
    factory = instantiate(
        cfg.model,
        _partial_=True,
        backbone=backbone,
        n_views=n_views,
        foreground=OmegaConf.select(cfg, "data.foreground", default="none"),
        round_features=bool(OmegaConf.select(cfg, "data.cache_features", default=False)),
        backbone_storage=OmegaConf.select(cfg, "checkpoint.backbone", default="reference"),
        convolutions=convolution_settings(cfg),
    )
    return factory(run_config=run_config)


def convolution_settings(cfg: DictConfig) -> dict:
    """``model.convolutions`` with its algorithm resolved: an unset one is ``"direct"`` (the same seed gives
    the same numbers), or ``"auto"`` (timed choices) when ``trainer.benchmark`` is true, as cuDNN's."""
    settings = OmegaConf.to_container(cfg.model.get("convolutions") or OmegaConf.create({}), resolve=True)
    if settings.get("algorithm") is None:
        settings["algorithm"] = (
            "auto" if OmegaConf.select(cfg, "trainer.benchmark", default=None) else "direct"
        )
    return settings


@dataclass(frozen=True)
class TrainedModel:
    """A trained model rebuilt from its checkpoint alone.

    Attributes:
        model: the model in eval mode, set to prepare inputs as in training (foreground, feature rounding).
        threshold: the OK/NG threshold fitted on validation samples, or None (``data.val_fraction=0``).
        config: the run configuration stored in the checkpoint.
    """

    model: MultiFlowModel
    threshold: Threshold | None
    config: DictConfig


def load_trained_model(ckpt_path: str | Path) -> TrainedModel:
    """Rebuild a trained model, its threshold and run config from a checkpoint (``weights_only=True``)."""
    module, run_cfg, checkpoint = load_trained_module(ckpt_path)
    return TrainedModel(module.model, threshold_from_checkpoint(checkpoint), run_cfg)


def load_trained_module(ckpt_path: str | Path) -> tuple[MultiFlowModule, DictConfig, dict]:
    """The LightningModule of a checkpoint in eval mode, the run config stored in it and the checkpoint."""
    path = Path(ckpt_path).expanduser()
    checkpoint = read_checkpoint(path)
    run_cfg = load_checkpoint_config(checkpoint, path)
    run_cfg.backbone = backbone_config(run_cfg, checkpoint)
    module = build_module(run_cfg, instantiate(run_cfg.backbone), int(run_cfg.model.n_views))
    load_module_state(module, checkpoint, path)
    return module.eval(), run_cfg, checkpoint


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, loaded with ``weights_only=True``; a missing or damaged file is a user error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist; pass ckpt_path=<run>/checkpoints/last.ckpt."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        reason = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"Cannot load checkpoint {path} ({type(err).__name__}: {reason}). It is damaged, or holds "
            "objects other than tensors and plain values, which are refused for safety (weights_only=True)."
        ) from err


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Trainer with the configured loggers and callbacks."""
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def evaluate_on_test_set(
    trainer: L.Trainer,
    module: MultiFlowModule,
    datamodule: MultiViewDataModule,
    run_dir: Path,
    seed: int | None,
) -> dict:
    """Run the test loop (the callbacks write score tables, predictions and plots) and write
    ``run_dir/metrics.json``; returns its record."""
    trainer.test(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return module.test_results
    record = write_metrics_json(run_dir / "metrics.json", module.test_results, datamodule.category, seed)
    print_results(record)
    return record


def print_results(record: dict) -> None:
    """A small results table on the console, its heading on a line of its own (a table title wraps to
    the table's narrow width); plain text without colour codes when the output is not a terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"Multi-Flow results: {record.get('category')} (seed {record.get('seed')})", style="bold")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    per_class = sorted(k for k in record if k.startswith("sample_auroc_") and k != "sample_auroc_mean")
    for key in (*RESULT_KEYS, *per_class):
        value = record.get(key)
        table.add_row(key, "n/a" if value is None else f"{100 * value:.1f}")
    console.print(table)
