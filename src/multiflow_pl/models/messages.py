"""Cross-view message passing: the subnetwork of one coupling step, over all views at once.

For view i, with u_i its conditioning half, n the noise-conditioning map (zeros at test time) and replicate
padding everywhere (the paper's equations, :meth:`CrossViewSubnet.plain_forward`):

    h_i   = relu(conv_k(cat(u_i, n)))                                    hidden activation
    out_i = gamma_i * (conv_k(h_i) + mean_{j in N(i)} M_{j->i}(h_j))     2*Ct channels -> (log_s_raw, t)

gamma_i (one scalar per view, initialised to 0) gates the whole output, own path and messages alike, as in
the paper and CS-Flow: a new coupling is the identity. M_{j->i} is a conv k x k with its own weights per
directed edge (``"per_edge"``, the paper) or one conv shared by all edges (``"shared"``). Messages read
only conditioning halves, so the flow's Jacobian stays block-triangular and its likelihood exact.

``messages`` picks what M_{j->i} reads: ``"conv"`` (the paper's, above) or the reference code's attention
variants, ``"cross_attention"`` / ``"self_attention"``, whose message conv reads an attended map instead
of h_j: M_{j->i} = conv_k(A_{j->i}(h_j, h_i)) (:mod:`multiflow_pl.models.attention`; per edge or shared).

How the subnet computes is pluggable: a :class:`SubnetKernel` given to it (``subnet.kernel``) computes the
same function from the same parameters, faster; :mod:`multiflow_pl.speed` has the folded, batched one that
training uses (for attention messages, a batched one). Without a kernel the subnet runs
:meth:`~CrossViewSubnet.plain_forward`.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from multiflow_pl.models.attention import MESSAGE_KINDS, EdgeAttention, MessageKind

MessageWeights = Literal["per_edge", "shared"]


class SubnetKernel(Protocol):
    """A faster way to compute a :class:`CrossViewSubnet`: the same function of the same parameters."""

    def __call__(
        self, subnet: CrossViewSubnet, u: torch.Tensor, cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`CrossViewSubnet.plain_forward`."""
        ...

    def portable(self) -> SubnetKernel:
        """The same kernel without choices tied to this machine or batch size (for ``torch.export``)."""
        ...


def same_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Replicate-padded 'same' convolution: ``x [B, Cin, h, w]``, ``weight [Cout, Cin/groups, k, k]`` ->
    ``[B, Cout, h, w]``."""
    p = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="replicate") if p else x, weight, bias, groups=groups)


def _uniform_init(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class CrossViewSubnet(nn.Module):
    """Maps the conditioning halves of all views to (log_s_raw, t) for their transformed halves.

    Parameters (view-stacked, so a kernel can batch them): ``first_weight [V, hidden, Cc+n, k, k]``,
    ``self_weight [V, 2Ct, hidden, k, k]``, ``message_weight [E or 1, 2Ct, hidden, k, k]`` (edges in
    ``adjacency.nonzero()`` order), biases alike, ``gamma [V]``; with attention messages also
    ``attention`` (an :class:`~multiflow_pl.models.attention.EdgeAttention` with as many weight sets).

    Args:
        in_channels: Cc, channels of the conditioning half.
        out_channels: Ct, channels of the transformed half (the subnet predicts 2*Ct).
        adjacency: ``[V, V]`` bool, ``adjacency[i, j]``: view j sends to view i.
        kernel_size: k of all three convs (odd).
        hidden: hidden channels per view.
        noise_channels: n, extra input channels for the noise-conditioning map.
        message_weights: ``"per_edge"`` or ``"shared"``.
        messages: ``"conv"`` (the paper), ``"cross_attention"`` or ``"self_attention"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        adjacency: torch.Tensor,
        kernel_size: int,
        hidden: int = 64,
        noise_channels: int = 1,
        message_weights: MessageWeights = "per_edge",
        messages: MessageKind = "conv",
    ) -> None:
        super().__init__()
        if message_weights not in ("per_edge", "shared"):
            raise ValueError(f"message_weights must be 'per_edge' or 'shared', got {message_weights!r}.")
        if messages not in MESSAGE_KINDS:
            raise ValueError(f"messages must be one of {', '.join(MESSAGE_KINDS)}, got {messages!r}.")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the map size, got {kernel_size}.")
        n_views = adjacency.shape[0]
        self.n_views, self.in_channels, self.out_channels = n_views, in_channels, out_channels
        self.kernel_size, self.hidden, self.noise_channels = kernel_size, hidden, noise_channels
        self.message_weights, self.messages = message_weights, messages
        self.kernel: SubnetKernel | None = None
        k, c_out = kernel_size, 2 * out_channels
        c_in = in_channels + noise_channels

        self.first_weight = _uniform_init((n_views, hidden, c_in, k, k), c_in * k * k)
        self.first_bias = _uniform_init((n_views, hidden), c_in * k * k)
        self.self_weight = _uniform_init((n_views, c_out, hidden, k, k), hidden * k * k)
        self.self_bias = _uniform_init((n_views, c_out), hidden * k * k)
        self.gamma = nn.Parameter(torch.zeros(n_views))
        adjacency = adjacency.cpu()
        self.n_edges = int(adjacency.sum())
        self.register_buffer("edges", adjacency.nonzero(), persistent=False)  # [E, 2]: (target, source)
        # the same as Python pairs: the plain form loops over them without reading a tensor (exportable)
        self.edge_pairs: list[tuple[int, int]] = [(int(i), int(j)) for i, j in adjacency.nonzero().tolist()]
        if self.n_edges:
            n_kernels = self.n_edges if message_weights == "per_edge" else 1
            self.message_weight = _uniform_init((n_kernels, c_out, hidden, k, k), hidden * k * k)
            self.message_bias = _uniform_init((n_kernels, c_out), hidden * k * k)
        self.attention: EdgeAttention | None = None
        if self.n_edges and messages != "conv":
            self.attention = EdgeAttention(n_kernels, hidden, messages)

    def forward(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-major ``u [B, h, w, V, Cc]``, ``cond [B, h, w, 1|V, n]`` or None (zeros) ->
        ``(log_s_raw, t)``, each ``[B, h, w, V, Ct]``; by the kernel if one is set."""
        if self.kernel is not None:
            return self.kernel(self, u, cond)
        return self.plain_forward(u, cond)

    def plain_forward(
        self, u: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's subnetwork, one view and one edge at a time (the module doc's equations).

        The reference every kernel is tested against. Shapes as in :meth:`forward`.
        """
        batch, height, width, n_views, _ = u.shape
        u = u.permute(0, 3, 4, 1, 2)  # [B, V, Cc, h, w]
        if cond is None:
            noise = u.new_zeros(batch, 1, self.noise_channels, height, width)
        else:
            noise = cond.permute(0, 3, 4, 1, 2)
        noise = noise.expand(-1, n_views, -1, -1, -1)

        hidden = [
            F.relu(same_conv(torch.cat([u[:, i], noise[:, i]], 1), self.first_weight[i], self.first_bias[i]))
            for i in range(n_views)
        ]
        outputs = []
        for i in range(n_views):
            out = same_conv(hidden[i], self.self_weight[i], self.self_bias[i])
            incoming = []
            for e, (target, source) in enumerate(self.edge_pairs):
                if target == i:
                    m = e if self.message_weights == "per_edge" else 0
                    read = hidden[source]  # conv messages read h_j; attention ones its attended map
                    if self.attention is not None:
                        read = self.attention(m, hidden[source], hidden[i])
                    incoming.append(same_conv(read, self.message_weight[m], self.message_bias[m]))
            if incoming:
                out = out + torch.stack(incoming).mean(0)
            outputs.append(self.gamma[i] * out)
        out = torch.stack(outputs, dim=1).permute(0, 3, 4, 1, 2)  # [B, h, w, V, 2Ct]
        return out[..., : self.out_channels], out[..., self.out_channels :]

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, views={self.n_views}, edges={self.n_edges}, "
            f"k={self.kernel_size}, hidden={self.hidden}, noise={self.noise_channels}, "
            f"message_weights={self.message_weights}, messages={self.messages}"
        )
