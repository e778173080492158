"""The one gather of Python objects across DDP ranks (tensors are synced by torchmetrics)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


def gather_objects(trainer: L.Trainer, payload: Any) -> list[Any]:
    """``payload`` of every rank, in rank order (a collective call under DDP; ``[payload]`` otherwise)."""
    if trainer.world_size == 1:
        return [payload]
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, payload)
    return gathered
