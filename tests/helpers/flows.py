"""Tiny flows for the tests, and the naive per-view twin they are checked against."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from multiflow_pl.models.flow import MultiViewFlow

_NAIVE_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "naive_flow.py"
_spec = importlib.util.spec_from_file_location("naive_flow", _NAIVE_PATH)
naive_flow = importlib.util.module_from_spec(_spec)
"""benchmarks/naive_flow.py: the per-view/per-edge twin the fast flow is checked against."""
_spec.loader.exec_module(naive_flow)

N_VIEWS = 5


def make_flow(graph="top_ring", mode="per_edge", dtype=torch.float32, channels=6, kernel_sizes=(3, 3), **kw):
    """Tiny seeded ``MultiViewFlow`` over :data:`N_VIEWS` views with output gates drawn in [0.5, 1.5].

    A new flow's gates are 0 (every coupling the identity); these make subnetworks and messages active.
    ``kw`` goes to the constructor; hidden defaults to 8.
    """
    torch.manual_seed(0)
    kw.setdefault("hidden", 8)
    flow = MultiViewFlow(
        channels,
        N_VIEWS,
        graph,
        n_blocks=len(kernel_sizes),
        kernel_sizes=kernel_sizes,
        message_weights=mode,
        **kw,
    )
    flow = flow.to(dtype)
    with torch.no_grad():
        for coupling in flow.couplings:
            for net in (coupling.subnet_a, coupling.subnet_b):
                net.gamma.uniform_(0.5, 1.5)
    return flow
