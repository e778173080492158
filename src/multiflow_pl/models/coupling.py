"""Flow building blocks: per-view channel permutation, soft clamp, two-sided affine coupling."""

from __future__ import annotations

import torch
from torch import nn

from multiflow_pl.models.fusion import CrossViewSubnet, MessageWeights


def soft_clamp(s: torch.Tensor, clamp: float) -> torch.Tensor:
    """Smoothly bound log-scales to about (-clamp, clamp): ``clamp * 0.636 * atan(s / clamp)``."""
    return clamp * 0.636 * torch.atan(s / clamp)


class ViewPermutation(nn.Module):
    """Fixed random channel permutation, drawn independently for every view.

    The permutations are persistent buffers (``perm``, ``inverse_perm``, ``[V, C]``), so a checkpoint keeps
    them even if the random generator changes between torch versions.
    """

    def __init__(self, channels: int, n_views: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        perm = torch.stack([torch.randperm(channels, generator=generator) for _ in range(n_views)])
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", perm.argsort(dim=1))

    @staticmethod
    def _permute(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        batch, n_views, channels, height, width = x.shape
        offsets = torch.arange(n_views, device=perm.device)[:, None] * channels
        flat = x.reshape(batch, n_views * channels, height, width).index_select(1, (perm + offsets).flatten())
        return flat.view(batch, n_views, channels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, V, C, h, w]`` -> same shape, view v's channels reordered by ``perm[v]``."""
        return self._permute(x, self.perm)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`forward`."""
        return self._permute(y, self.inverse_perm)


class AffineCoupling(nn.Module):
    """Two-sided affine coupling over all views, conditioned across views by :class:`CrossViewSubnet`.

    Channels split into a (first C//2) and b (rest); a' = a * exp(clamp(s_a)) + t_a with (s_a, t_a) from
    b of all views, then b' = b * exp(clamp(s_b)) + t_b with (s_b, t_b) from a' of all views.
    """

    def __init__(
        self,
        channels: int,
        adjacency: torch.Tensor,
        kernel_size: int,
        hidden: int = 64,
        clamp: float = 1.9,
        noise_channels: int = 1,
        message_weights: MessageWeights = "per_edge",
    ) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"Coupling needs at least 2 channels, got {channels}.")
        self.split = channels // 2
        self.clamp = clamp
        common = dict(
            adjacency=adjacency,
            kernel_size=kernel_size,
            hidden=hidden,
            noise_channels=noise_channels,
            message_weights=message_weights,
        )
        self.subnet_a = CrossViewSubnet(channels - self.split, self.split, **common)
        self.subnet_b = CrossViewSubnet(self.split, channels - self.split, **common)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, V, C, h, w]`` -> ``(y [B, V, C, h, w], logdet [B, V, h, w])``."""
        a, b = x[:, :, : self.split], x[:, :, self.split :]
        s_raw, t = self.subnet_a(b, cond)
        log_s_a = soft_clamp(s_raw, self.clamp)
        a = a * torch.exp(log_s_a) + t
        s_raw, t = self.subnet_b(a, cond)
        log_s_b = soft_clamp(s_raw, self.clamp)
        b = b * torch.exp(log_s_b) + t
        return torch.cat([a, b], dim=2), log_s_a.sum(2) + log_s_b.sum(2)

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Exact inverse of :meth:`forward`: ``y [B, V, C, h, w]`` -> ``x``."""
        a, b = y[:, :, : self.split], y[:, :, self.split :]
        s_raw, t = self.subnet_b(a, cond)
        b = (b - t) * torch.exp(-soft_clamp(s_raw, self.clamp))
        s_raw, t = self.subnet_a(b, cond)
        a = (a - t) * torch.exp(-soft_clamp(s_raw, self.clamp))
        return torch.cat([a, b], dim=2)
