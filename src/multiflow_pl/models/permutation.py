"""The fixed per-view channel permutation between coupling blocks."""

from __future__ import annotations

import torch
from torch import nn


class ViewPermutation(nn.Module):
    """Fixed random channel permutation, drawn independently for every view.

    The permutations are persistent buffers (``perm``, ``inverse_perm``, ``[V, C]``), so a checkpoint keeps
    them even if the random generator changes between torch versions. ``view_dim`` names the view axis of
    the input; channels are the next axis (``[B, V, C, h, w]``: 1, pixel-major ``[B, h, w, V, C]``: 3).
    """

    def __init__(self, channels: int, n_views: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        perm = torch.stack([torch.randperm(channels, generator=generator) for _ in range(n_views)])
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", perm.argsort(dim=1))

    @staticmethod
    def _permute(x: torch.Tensor, perm: torch.Tensor, view_dim: int) -> torch.Tensor:
        n_views, channels = perm.shape
        offsets = torch.arange(n_views, device=perm.device)[:, None] * channels
        index = (perm + offsets).flatten()
        flat = x.flatten(view_dim, view_dim + 1)
        if view_dim + 2 == x.dim():  # channels last: a gather of matrix rows (faster on CPU)
            rows = flat.reshape(-1, n_views * channels).index_select(1, index)
            return rows.view(*x.shape[:view_dim], n_views, channels)
        return flat.index_select(view_dim, index).unflatten(view_dim, (n_views, channels))

    def forward(self, x: torch.Tensor, view_dim: int = 1) -> torch.Tensor:
        """``[B, V, C, h, w]`` (or any layout, see ``view_dim``) -> same, view v's channels reordered by
        ``perm[v]``."""
        return self._permute(x, self.perm, view_dim)

    def inverse(self, y: torch.Tensor, view_dim: int = 1) -> torch.Tensor:
        """Undo :meth:`forward`."""
        return self._permute(y, self.inverse_perm, view_dim)
