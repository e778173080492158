"""Analytic floating-point operations of a MultiViewFlow pass, for the flow benchmarks.

Counts the architecture's own convolutions as direct convolutions (2 FLOPs per multiply-add): per block and
coupling step, the first conv of every view, the self conv of every view and the messages (one conv per
directed edge with per-edge weights; one conv on the neighbour mean per receiving view with shared weights).
Element-wise work is left out (well under 1%). A training step costs about 3x a forward pass (forward,
input gradients, weight gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

from multiflow_pl.models.graph import view_graph


def flow_forward_flops(
    channels: int,
    n_views: int,
    graph: str,
    height: int,
    width: int,
    batch: int = 1,
    hidden: int = 64,
    kernel_sizes: Sequence[int] = (3, 3, 3, 3, 3, 5),
    message_weights: str = "per_edge",
    noise_channels: int = 1,
) -> float:
    """FLOPs of one forward pass over ``[batch, n_views, channels, height, width]`` features."""
    adjacency = view_graph(graph, n_views)
    n_edges = int(adjacency.sum())
    receivers = int(adjacency.any(1).sum())
    n_messages = n_edges if message_weights == "per_edge" else receivers
    total = 0
    for k in kernel_sizes:
        for c_cond, c_out in (
            (channels - channels // 2, channels // 2),
            (channels // 2, channels - channels // 2),
        ):
            first = n_views * hidden * (c_cond + noise_channels)
            second = (n_views + n_messages) * 2 * c_out * hidden
            total += (first + second) * k * k
    return 2.0 * total * batch * height * width
