"""View graphs: which camera views exchange messages in the flow.

An adjacency is a ``torch.BoolTensor [V, V]`` with ``adj[i, j]`` True iff view ``j`` sends a message to
view ``i``. There are no self loops. View 0 is the top camera, views 1..V-1 the side cameras.
"""

from __future__ import annotations

import torch

GRAPH_NAMES: tuple[str, ...] = ("top_ring", "ring", "chain", "top", "side_ring", "full", "none")

# Fewest views for which a graph is meaningful.
_MIN_VIEWS = {"top_ring": 2, "ring": 2, "chain": 2, "top": 2, "side_ring": 3, "full": 2, "none": 1}


def _ring_edges(nodes: list[int]) -> list[tuple[int, int]]:
    """Undirected ring over ``nodes`` in order (a single edge for two nodes)."""
    n = len(nodes)
    return [(nodes[k], nodes[(k + 1) % n]) for k in range(n) if n > 1 and nodes[k] != nodes[(k + 1) % n]]


def _undirected_edges(name: str, n_views: int) -> list[tuple[int, int]]:
    sides = list(range(1, n_views))
    if name == "top_ring":
        return [(0, s) for s in sides] + _ring_edges(sides)
    if name == "ring":
        return _ring_edges(list(range(n_views)))
    if name == "chain":
        return [(i, i + 1) for i in range(n_views - 1)]
    if name == "top":
        return [(0, s) for s in sides]
    if name == "side_ring":
        return _ring_edges(sides)
    if name == "full":
        return [(i, j) for i in range(n_views) for j in range(i + 1, n_views)]
    return []


def view_graph(name: str, n_views: int) -> torch.Tensor:
    """Adjacency ``[V, V]`` (bool, ``adj[i, j]``: j sends to i) of the named view graph.

    ``top_ring`` (the paper's): top <-> every side view plus a ring over the sides 1-2-...-(V-1)-1;
    ``ring``: ring over all views; ``chain``: 0-1-2-...; ``top``: top <-> sides only; ``side_ring``:
    ring over the sides, top isolated; ``full``: every pair; ``none``: independent views.
    """
    if name not in _MIN_VIEWS:
        raise ValueError(f"Unknown view graph {name!r}; choose one of {', '.join(GRAPH_NAMES)}.")
    if n_views < _MIN_VIEWS[name]:
        raise ValueError(
            f"View graph {name!r} needs at least {_MIN_VIEWS[name]} views, got n_views={n_views}."
        )
    adj = torch.zeros(n_views, n_views, dtype=torch.bool)
    for i, j in _undirected_edges(name, n_views):
        adj[i, j] = adj[j, i] = True
    return adj


def check_adjacency(adj: torch.Tensor, n_views: int) -> torch.Tensor:
    """Validate a user-given adjacency ``[V, V]`` and return it as a CPU bool tensor."""
    if adj.shape != (n_views, n_views):
        raise ValueError(f"Adjacency must have shape ({n_views}, {n_views}), got {tuple(adj.shape)}.")
    if adj.dtype != torch.bool:
        raise ValueError(f"Adjacency must be a bool tensor, got dtype {adj.dtype}.")
    adj = adj.detach().cpu()
    if adj.diagonal().any():
        raise ValueError("Adjacency must not have self loops (adj[i, i] must be False).")
    return adj


def reachable(adj: torch.Tensor, steps: int) -> torch.Tensor:
    """``[V, V]`` bool: ``out[i, j]`` True iff j reaches i along at most ``steps`` edges (self included)."""
    out = torch.eye(adj.shape[0], dtype=torch.bool, device=adj.device)
    step = adj.to(torch.int64)
    for _ in range(steps):
        out = out | ((step @ out.to(torch.int64)) > 0)
    return out
