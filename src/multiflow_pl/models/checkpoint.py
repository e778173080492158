"""Loading checkpoints safely (``weights_only=True``) with clear errors for mismatched configs.

Lean checkpoints: the frozen backbone's weights come from a package, the hub or a seeded random init,
so by default a checkpoint stores only where they come from and their digest
(``checkpoint["multiflow_backbone"]``), not the weights; loading rebuilds the backbone from the stored
config and checks the digest. ``checkpoint.backbone=embedded`` (and a backbone read from a local
``weights_file``) stores the weights: a self-contained file.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

BACKBONE_KEY = "multiflow_backbone"
"""Where a lean checkpoint stores its backbone reference: ``{"source": ..., "digest": ...}``."""
BACKBONE_STORAGE = ("reference", "embedded")
BACKBONE_PREFIX = "model.backbone."
"""Where the backbone's weights sit in a checkpoint's ``state_dict``."""
LEGACY_MODULE_TARGET = "multiflow_pl.models.module.MultiFlowModule"
"""The LightningModule's import path in checkpoints written before the model/module split."""
MODULE_TARGET = "multiflow_pl.lightning_module.MultiFlowModule"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used with the requested configuration."""


LEGACY_CONV_KEYS = {"conv_algorithm": "algorithm", "conv_dtype": "dtype"}
"""``model.flow`` keys of checkpoints written before the speed settings left the flow -> their
``model.convolutions`` names."""


def load_checkpoint_config(checkpoint: dict, path: str | Path) -> DictConfig:
    """The run configuration stored in a checkpoint by the training entry point (a checkpoint written
    before the model/module split gets today's module path; one written with the convolution settings
    under ``model.flow`` gets them under ``model.convolutions``)."""
    saved = checkpoint.get("multiflow_config")
    if not saved:
        raise CheckpointError(f"{path} has no multiflow_config: it was not written by multiflow_pl.train.")
    config = OmegaConf.create(saved)
    if OmegaConf.select(config, "model._target_") == LEGACY_MODULE_TARGET:
        config.model._target_ = MODULE_TARGET
    flow = OmegaConf.select(config, "model.flow")
    for old, new in LEGACY_CONV_KEYS.items():
        if flow is not None and old in flow:
            OmegaConf.update(config, f"model.convolutions.{new}", flow.pop(old), force_add=True)
    return config


def upgrade_state_dict(checkpoint: dict) -> None:
    """Rename the ``backbone.*`` / ``flow.*`` weights of checkpoints written before the model/module
    split to today's ``model.backbone.*`` / ``model.flow.*``, in place (newer ones stay as they are)."""
    state = checkpoint.get("state_dict") or {}
    legacy = [k for k in state if k.startswith(("backbone.", "flow."))]
    for key in legacy:
        state[f"model.{key}"] = state.pop(key)


def backbone_config(run_cfg: DictConfig, checkpoint: dict) -> DictConfig:
    """The backbone settings to rebuild a checkpoint's backbone with: as trained for a lean checkpoint
    (its weights come from their source again), random init for a self-contained one (its weights are
    in the file, so nothing is fetched)."""
    backbone = run_cfg.backbone.copy()
    if checkpoint.get(BACKBONE_KEY) is None:
        backbone.pretrained = False
        for key in ("weights_file", "weights_package"):
            if key in backbone:
                backbone[key] = None
    return backbone


def strip_backbone(checkpoint: dict, backbone: nn.Module, storage: str) -> None:
    """Replace the backbone's weights in ``checkpoint["state_dict"]`` by a reference with a digest
    (``storage="reference"``, unless the weights come from a local file); ``"embedded"`` keeps them."""
    if storage not in BACKBONE_STORAGE:
        raise CheckpointError(f"checkpoint.backbone={storage!r}; expected one of {BACKBONE_STORAGE}.")
    if storage == "embedded" or backbone.weights_file:
        return
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith(BACKBONE_PREFIX)]:
        del state[key]
    checkpoint[BACKBONE_KEY] = {"source": backbone.weights_source(), "digest": backbone.weights_digest()}


def restore_backbone(checkpoint: dict, backbone: nn.Module, path: str | Path) -> None:
    """Put the rebuilt backbone's weights back into a lean checkpoint's ``state_dict``, after checking
    that they are the weights it was trained with; checkpoints with the whole (uncut) backbone lose the
    weights of the layers after the cut."""
    state = checkpoint.get("state_dict")
    if state is None:
        raise CheckpointError(f"{path} holds no state_dict.")
    upgrade_state_dict(checkpoint)
    reference = checkpoint.get(BACKBONE_KEY)
    if reference is None:
        own = {f"{BACKBONE_PREFIX}{k}" for k in backbone.state_dict()}
        for key in [k for k in state if k.startswith(f"{BACKBONE_PREFIX}model.") and k not in own]:
            del state[key]
        return
    digest = backbone.weights_digest()
    if digest != reference["digest"]:
        raise CheckpointError(
            f"Checkpoint {path} was trained with backbone weights {reference['source']} of digest "
            f"{reference['digest']}, but they now load with digest {digest}: the package, hub file or "
            "library that provides them has changed. Install the versions it was trained with, or "
            "retrain with checkpoint.backbone=embedded for a self-contained checkpoint."
        )
    state.update({f"{BACKBONE_PREFIX}{k}": v for k, v in backbone.state_dict().items()})


def load_module_state(module: nn.Module, checkpoint: dict, path: str | Path) -> None:
    """Load ``checkpoint["state_dict"]`` into ``module``; a shape or key mismatch names what differs."""
    restore_backbone(checkpoint, module.model.backbone, path)
    state = checkpoint["state_dict"]
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            k = mismatched[0]
            details.append(
                f"{len(mismatched)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} in the "
                f"checkpoint vs {tuple(own[k].shape)} here)"
            )
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"Checkpoint {path} does not fit this model configuration: {'; '.join(details)}. It was trained "
            f"with another backbone, graph, view count or flow size; evaluate it with its own settings."
        )
    module.load_state_dict(state)
