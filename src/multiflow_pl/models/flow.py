"""MultiViewFlow: a normalizing flow over the feature maps of all views of one product at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from multiflow_pl.models.attention import MessageKind
from multiflow_pl.models.coupling import AffineCoupling
from multiflow_pl.models.graph import check_adjacency, view_graph
from multiflow_pl.models.messages import MessageWeights
from multiflow_pl.models.permutation import ViewPermutation


def noise_condition(
    x: torch.Tensor, std: float = 0.15, scale: float = 20.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-time noise conditioning of features ``x [B, V, C, h, w]``.

    Draws one noise map ``n = N(0, 1) * std`` of shape ``[B, 1, 1, h, w]`` shared by all views and channels;
    returns ``(x + n, n * scale)``, the second being the ``cond`` input of :class:`MultiViewFlow`.
    """
    batch, _, _, height, width = x.shape
    device = x.device if generator is None else generator.device
    noise = torch.randn(batch, 1, 1, height, width, generator=generator, device=device, dtype=x.dtype)
    noise = noise.to(x.device) * std
    return x + noise, noise * scale


class MultiViewFlow(nn.Module):
    """Multi-Flow: coupling blocks over ``[B, V, C, h, w]`` features with cross-view message passing.

    Each block permutes every view's channels (fixed, seeded) and applies a two-sided affine coupling whose
    subnetworks exchange messages along ``graph``. The log-determinant is kept per pixel and view. Subnets
    compute in their plain form unless given a kernel (:func:`multiflow_pl.speed.use_folded_convolutions`,
    which training and scoring use: the same function, faster).

    Args:
        channels: C, feature channels per view.
        n_views: V.
        graph: a name from :data:`multiflow_pl.models.graph.GRAPH_NAMES` or a bool adjacency ``[V, V]``
            (``adj[i, j]``: view j sends to view i).
        n_blocks: number of coupling blocks; block k uses ``kernel_sizes[k]``.
        hidden: hidden channels of every subnetwork.
        kernel_sizes: one odd kernel size per block.
        clamp: soft-clamp bound of the log-scales.
        noise_channels: channels of the noise-conditioning input (0 disables it).
        message_weights: ``"per_edge"`` (own message weights per directed edge, the paper) or ``"shared"``.
        messages: ``"conv"`` (a conv of the sender's hidden map, the paper), or the reference code's
            ``"cross_attention"`` / ``"self_attention"`` (:mod:`multiflow_pl.models.attention`).
        seed: seeds the channel permutations (parameters use the global generator).
    """

    def __init__(
        self,
        channels: int,
        n_views: int,
        graph: str | torch.Tensor,
        n_blocks: int = 6,
        hidden: int = 64,
        kernel_sizes: Sequence[int] = (3, 3, 3, 3, 3, 5),
        clamp: float = 1.9,
        noise_channels: int = 1,
        message_weights: MessageWeights = "per_edge",
        messages: MessageKind = "conv",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != n_blocks:
            raise ValueError(
                f"Need one kernel size per block: n_blocks={n_blocks}, kernel_sizes={kernel_sizes}."
            )
        adjacency = view_graph(graph, n_views) if isinstance(graph, str) else check_adjacency(graph, n_views)
        self.channels, self.n_views, self.noise_channels = channels, n_views, noise_channels
        self.register_buffer("adjacency", adjacency, persistent=False)
        generator = torch.Generator().manual_seed(seed)
        self.permutations = nn.ModuleList(
            ViewPermutation(channels, n_views, generator) for _ in range(n_blocks)
        )
        self.couplings = nn.ModuleList(
            AffineCoupling(channels, adjacency, k, hidden, clamp, noise_channels, message_weights, messages)
            for k in kernel_sizes
        )

    @property
    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def gammas(self) -> torch.Tensor:
        """Output gates ``[n_blocks, 2, V]`` (block, coupling step a/b, view), detached."""
        gates = [torch.stack([c.subnet_a.gamma, c.subnet_b.gamma]) for c in self.couplings]
        return torch.stack(gates).detach()

    def _check_inputs(self, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        if x.dim() != 5 or x.shape[1] != self.n_views or x.shape[2] != self.channels:
            raise ValueError(
                f"Expected features [B, {self.n_views}, {self.channels}, h, w], got {tuple(x.shape)}."
            )
        if cond is None:
            return
        if self.noise_channels == 0:
            raise ValueError("This flow has noise_channels=0; pass cond=None.")
        batch, _, _, height, width = x.shape
        if cond.dim() != 5 or tuple(cond.shape[2:]) != (self.noise_channels, height, width):
            raise ValueError(
                f"Expected cond [B, 1 or {self.n_views}, {self.noise_channels}, {height}, {width}], "
                f"got {tuple(cond.shape)}."
            )
        if cond.shape[0] != batch or cond.shape[1] not in (1, self.n_views):
            raise ValueError(f"cond {tuple(cond.shape)} does not match features {tuple(x.shape)}.")

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, V, C, h, w]`` -> ``(z [B, V, C, h, w], logdet [B, V, h, w])``; cond None means zeros."""
        z, logdet = self._forward_pixels(x, cond)
        return z.permute(0, 3, 4, 1, 2).contiguous(), logdet.permute(0, 3, 1, 2).contiguous()

    def _forward_pixels(
        self, x: torch.Tensor, cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow in pixel-major layout: ``(z [B, h, w, V, C], logdet [B, h, w, V])``.

        The blocks work on ``[B, h, w, V, C]``: convolutions then see channels-last images (fast on CPU
        and GPU), and splitting channels or gathering views moves whole channel vectors. The first
        permutation's gather also does the layout change.
        """
        self._check_inputs(x, cond)
        x = x.permute(0, 3, 4, 1, 2)
        cond = None if cond is None else cond.permute(0, 3, 4, 1, 2)
        logdet = x.new_zeros(x.shape[:4])
        for permutation, coupling in zip(self.permutations, self.couplings, strict=True):
            x, block_logdet = coupling(permutation(x, view_dim=3), cond)
            logdet = logdet + block_logdet
        return x, logdet

    def inverse(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Exact inverse of :meth:`forward`: ``z [B, V, C, h, w]`` -> ``x``."""
        self._check_inputs(z, cond)
        z = z.permute(0, 3, 4, 1, 2)
        cond = None if cond is None else cond.permute(0, 3, 4, 1, 2)
        for permutation, coupling in zip(reversed(self.permutations), reversed(self.couplings), strict=True):
            z = permutation.inverse(coupling.inverse(z, cond), view_dim=3)
        return z.permute(0, 3, 4, 1, 2).contiguous()

    def nll(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Per-pixel negative log-likelihood per channel ``[B, V, h, w]``: (0.5 sum_c z^2 - logdet) / C."""
        z, logdet = self._forward_pixels(x, cond)
        return ((0.5 * z.pow(2).sum(-1) - logdet) / self.channels).permute(0, 3, 1, 2)

    def loss(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Training loss: mean over batch, views and pixels of ``(0.5 sum_c (m z)^2 - m logdet) / C``.

        ``mask [B, V, h, w]`` is the foreground weight m (ones when None).
        """
        if mask is None:
            return self.nll(x, cond).mean()
        expected = (x.shape[0], x.shape[1], x.shape[3], x.shape[4])
        if tuple(mask.shape) != expected:
            raise ValueError(f"Expected mask of shape {expected}, got {tuple(mask.shape)}.")
        z, logdet = self._forward_pixels(x, cond)
        mask = mask.to(z.dtype).permute(0, 2, 3, 1)  # [B, h, w, V]
        return ((0.5 * (z * mask[..., None]).pow(2).sum(-1) - mask * logdet) / self.channels).mean()
