"""Attention messages: the reference code's two further ways to form the message from view j to view i.

Instead of one conv over the sender's hidden map h_j, the message is

    M_{j->i} = conv_k(LayerNorm(relu(Attention(q, h_j, h_j))))      q = h_i (cross) or h_j (self)

a single-head attention over all h*w positions with embed dim = hidden (in-projection of queries, keys and
values, softmax(q k^T / sqrt(hidden)) v, out-projection, as ``torch.nn.MultiheadAttention`` with one head),
then ReLU, LayerNorm over the hidden channels and the message conv of :mod:`multiflow_pl.models.messages`
(hidden -> 2*Ct, replicate padding). This module holds the attention and LayerNorm weights, one set per
directed edge (or one shared set), stacked; the message conv stays the subnet's ``message_weight``. Both
kinds read only conditioning halves, so the flow's likelihood stays exact.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MessageKind = Literal["conv", "cross_attention", "self_attention"]
MESSAGE_KINDS = ("conv", "cross_attention", "self_attention")


class EdgeAttention(nn.Module):
    """Single-head attention + ReLU + LayerNorm for each of ``n_sets`` weight sets (edges, or 1 shared).

    Parameters: ``in_weight [S, 3*hidden, hidden]`` and ``in_bias [S, 3*hidden]`` (queries, keys, values),
    ``out_weight [S, hidden, hidden]``, ``out_bias [S, hidden]``, ``norm_weight``/``norm_bias [S, hidden]``;
    initialised as ``torch.nn.MultiheadAttention`` and ``torch.nn.LayerNorm`` are.

    Args:
        n_sets: weight sets (one per directed edge, or 1 shared by all edges).
        hidden: channels of the hidden maps (the embed dim).
        kind: ``"cross_attention"`` (queries from the receiver) or ``"self_attention"`` (from the sender).
    """

    def __init__(self, n_sets: int, hidden: int, kind: MessageKind) -> None:
        super().__init__()
        if kind not in ("cross_attention", "self_attention"):
            raise ValueError(f"EdgeAttention kind must be cross_attention or self_attention, got {kind!r}.")
        self.kind, self.hidden = kind, hidden
        in_weight = torch.empty(n_sets, 3 * hidden, hidden)
        out_weight = torch.empty(n_sets, hidden, hidden)
        for s in range(n_sets):
            nn.init.xavier_uniform_(in_weight[s])
            nn.init.uniform_(out_weight[s], -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))
        self.in_weight = nn.Parameter(in_weight)
        self.in_bias = nn.Parameter(torch.zeros(n_sets, 3 * hidden))
        self.out_weight = nn.Parameter(out_weight)
        self.out_bias = nn.Parameter(torch.zeros(n_sets, hidden))
        self.norm_weight = nn.Parameter(torch.ones(n_sets, hidden))
        self.norm_bias = nn.Parameter(torch.zeros(n_sets, hidden))

    def forward(self, s: int | torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor) -> torch.Tensor:
        """The attended map the message conv takes, from hidden maps ``sender`` (h_j) and ``receiver`` (h_i,
        read by cross attention only).

        ``s`` is one weight set (an int) for maps ``[B, hidden, h, w]``, or the sets of E edges (a long
        tensor ``[E]``) for maps ``[B, E, hidden, h, w]`` (all edges at once); returns the maps' shape.
        """
        hidden, height, width = sender.shape[-3:]
        keys_from = sender.flatten(-2).transpose(-1, -2)  # [..., hw, hidden]
        queries_from = receiver.flatten(-2).transpose(-1, -2) if self.kind == "cross_attention" else keys_from
        w_q, w_k, w_v = self.in_weight[s].transpose(-1, -2).split(hidden, dim=-1)  # [(E,) hidden, hidden]
        b_q, b_k, b_v = self.in_bias[s].unsqueeze(-2).split(hidden, dim=-1)  # [(E,) 1, hidden]
        q = queries_from @ w_q + b_q
        k = keys_from @ w_k + b_k
        v = keys_from @ w_v + b_v
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hidden), dim=-1)  # [..., hw (query), hw]
        attended = (weights @ v) @ self.out_weight[s].transpose(-1, -2) + self.out_bias[s].unsqueeze(-2)
        attended = F.layer_norm(F.relu(attended), (hidden,))
        attended = attended * self.norm_weight[s].unsqueeze(-2) + self.norm_bias[s].unsqueeze(-2)
        return attended.transpose(-1, -2).unflatten(-1, (height, width))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, sets={self.in_weight.shape[0]}, hidden={self.hidden}"
