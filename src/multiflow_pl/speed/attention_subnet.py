"""The batched attention subnet kernel: a :class:`~multiflow_pl.models.messages.CrossViewSubnet` with
attention messages computed for all views and edges at once, the same function as its plain form (tested
equal to it).

The plain form runs one convolution per view and one attention plus one message conv per edge. Here the
views' first and self convolutions are each one grouped convolution, all edges' attentions one batched
attention (:class:`~multiflow_pl.models.attention.EdgeAttention` over ``[B, E, ...]``), all message convs
one grouped convolution, and the mean over each view's senders one matrix product. Its convolutions are the
library's, in the parameters' dtype (``model.convolutions``' algorithm and dtype apply to conv messages).
"""

from __future__ import annotations

import torch
from torch import nn

from multiflow_pl.models.messages import CrossViewSubnet, same_conv


class BatchedAttentionKernel(nn.Module):
    """Computes a :class:`CrossViewSubnet` with attention messages in batched form (a
    :class:`~multiflow_pl.models.messages.SubnetKernel`; set by
    :func:`~multiflow_pl.speed.folded_subnet.use_folded_convolutions`).

    It holds only the subnet's graph structure (index buffers); the weights are the subnet's own.
    """

    def __init__(self, subnet: CrossViewSubnet) -> None:
        super().__init__()
        if subnet.attention is None:
            raise ValueError("BatchedAttentionKernel computes attention messages; this subnet has conv ones.")
        edges = subnet.edges.cpu()  # [E, 2]: (target, source)
        n_edges = edges.shape[0]
        per_edge = subnet.message_weights == "per_edge"
        ends = torch.zeros(subnet.n_views, n_edges)  # [V, E]: 1 where edge e ends at view i
        ends[edges[:, 0], torch.arange(n_edges)] = 1.0
        self.register_buffer("targets", edges[:, 0].clone(), persistent=False)
        self.register_buffer("sources", edges[:, 1].clone(), persistent=False)
        sets = torch.arange(n_edges) if per_edge else torch.zeros(n_edges, dtype=torch.long)
        self.register_buffer("sets", sets, persistent=False)
        # counts, divided in the forward pass: exact in any dtype the subnet is later moved to
        self.register_buffer("ends", ends, persistent=False)
        self.register_buffer("in_degree", ends.sum(1, keepdim=True).clamp(min=1), persistent=False)
        self.to(subnet.first_weight.device, subnet.first_weight.dtype)  # the index buffers stay integer

    def portable(self) -> BatchedAttentionKernel:
        """This kernel: it makes no choices tied to the machine or the batch size."""
        return self

    def forward(
        self, subnet: CrossViewSubnet, u: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`CrossViewSubnet.plain_forward`: pixel-major ``u [B, h, w, V, Cc]``,
        ``cond [B, h, w, 1|V, n]`` or None (zeros) -> ``(log_s_raw, t)``, each ``[B, h, w, V, Ct]``."""
        batch, height, width, n_views, _ = u.shape
        if cond is None:
            cond = u.new_zeros(batch, height, width, 1, subnet.noise_channels)
        inputs = torch.cat([u, cond.expand(-1, -1, -1, n_views, -1)], dim=-1)
        image = inputs.flatten(3).permute(0, 3, 1, 2)  # [B, V*(Cc+n), h, w]
        hidden = same_conv(image, subnet.first_weight.flatten(0, 1), subnet.first_bias.flatten(), n_views)
        hidden = hidden.relu()  # [B, V*hid, h, w]
        own = same_conv(hidden, subnet.self_weight.flatten(0, 1), subnet.self_bias.flatten(), n_views)
        own = own.unflatten(1, (n_views, -1))  # [B, V, 2Ct, h, w]
        hidden = hidden.unflatten(1, (n_views, -1))  # [B, V, hid, h, w]
        attended = subnet.attention(self.sets, hidden[:, self.sources], hidden[:, self.targets])  # [B,E,...]
        weight = subnet.message_weight[self.sets].flatten(0, 1)  # [E*2Ct, hid, k, k]
        messages = same_conv(
            attended.flatten(1, 2), weight, subnet.message_bias[self.sets].flatten(), len(self.sets)
        )
        mean = self.ends / self.in_degree  # [V, E]: 1/deg(i) where edge e ends at view i
        incoming = torch.einsum("ve,bechw->bvchw", mean, messages.unflatten(1, (len(self.sets), -1)))
        out = subnet.gamma.view(1, n_views, 1, 1, 1) * (own + incoming)
        return out.permute(0, 3, 4, 1, 2).split(subnet.out_channels, dim=-1)
