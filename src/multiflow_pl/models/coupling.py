"""The two-sided affine coupling over all views, and the soft clamp of its log-scales."""

from __future__ import annotations

import torch
from torch import nn

from multiflow_pl.models.attention import MessageKind
from multiflow_pl.models.messages import CrossViewSubnet, MessageWeights


def soft_clamp(s: torch.Tensor, clamp: float) -> torch.Tensor:
    """Smoothly bound log-scales to about (-clamp, clamp): ``clamp * 0.636 * atan(s / clamp)``."""
    return clamp * 0.636 * torch.atan(s / clamp)


class AffineCoupling(nn.Module):
    """Two-sided affine coupling over all views, conditioned across views by :class:`CrossViewSubnet`.

    Channels split into a (first C//2) and b (rest); a' = a * exp(clamp(s_a)) + t_a with (s_a, t_a) from
    b of all views, then b' = b * exp(clamp(s_b)) + t_b with (s_b, t_b) from a' of all views. Tensors are
    pixel-major, ``[B, h, w, V, C]`` (see :class:`~multiflow_pl.models.flow.MultiViewFlow`).
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
        messages: MessageKind = "conv",
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
            messages=messages,
        )
        self.subnet_a = CrossViewSubnet(channels - self.split, self.split, **common)
        self.subnet_b = CrossViewSubnet(self.split, channels - self.split, **common)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, h, w, V, C]``, ``cond [B, h, w, 1|V, n]`` or None -> ``(y [B, h, w, V, C],
        logdet [B, h, w, V])``."""
        a, b = x.split([self.split, x.shape[-1] - self.split], dim=-1)  # backward: one cat, no zero fill
        s_raw, t = self.subnet_a(b, cond)
        log_s_a = soft_clamp(s_raw, self.clamp)
        a = torch.addcmul(t, a, torch.exp(log_s_a))
        s_raw, t = self.subnet_b(a, cond)
        log_s_b = soft_clamp(s_raw, self.clamp)
        b = torch.addcmul(t, b, torch.exp(log_s_b))
        return torch.cat([a, b], dim=-1), log_s_a.sum(-1) + log_s_b.sum(-1)

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Exact inverse of :meth:`forward`: ``y [B, h, w, V, C]`` -> ``x``."""
        a, b = y.split([self.split, y.shape[-1] - self.split], dim=-1)
        s_raw, t = self.subnet_b(a, cond)
        b = (b - t) * torch.exp(-soft_clamp(s_raw, self.clamp))
        s_raw, t = self.subnet_a(b, cond)
        a = (a - t) * torch.exp(-soft_clamp(s_raw, self.clamp))
        return torch.cat([a, b], dim=-1)
