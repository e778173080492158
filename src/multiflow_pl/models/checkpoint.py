"""Loading checkpoints safely (``weights_only=True``) with clear errors for mismatched configs."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used with the requested configuration."""


def load_checkpoint_config(checkpoint: dict, path: str | Path) -> DictConfig:
    """The run configuration stored in a checkpoint by the training entry point."""
    saved = checkpoint.get("multiflow_config")
    if not saved:
        raise CheckpointError(f"{path} has no multiflow_config: it was not written by multiflow_pl.train.")
    return OmegaConf.create(saved)


def load_module_state(module: nn.Module, checkpoint: dict, path: str | Path) -> None:
    """Load ``checkpoint["state_dict"]`` into ``module``; a shape or key mismatch names what differs."""
    state = checkpoint.get("state_dict")
    if state is None:
        raise CheckpointError(f"{path} holds no state_dict.")
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
