"""Tiny flows for the tests, in their plain form or with the folded subnet kernel."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from multiflow_pl.models.attention import MESSAGE_KINDS
from multiflow_pl.models.flow import MultiViewFlow
from multiflow_pl.models.messages import CrossViewSubnet
from multiflow_pl.speed.folded_subnet import use_folded_convolutions

N_VIEWS = 5
KERNELS = ("plain", "folded")
"""How a test flow's subnets compute: the paper's per-view form, or the folded kernel training uses."""
VARIANTS = [(kernel, messages) for messages in MESSAGE_KINDS for kernel in KERNELS]
"""(kernel, messages) of the flows every exactness check runs on ("folded" gives attention subnets the
batched attention kernel)."""


def make_flow(
    graph="top_ring",
    mode="per_edge",
    dtype=torch.float32,
    channels=6,
    kernel_sizes=(3, 3),
    kernel="folded",
    conv_algorithm="direct",
    conv_dtype=None,
    messages="conv",
    **kw,
):
    """Tiny seeded ``MultiViewFlow`` over :data:`N_VIEWS` views with output gates drawn in [0.5, 1.5].

    A new flow's gates are 0 (every coupling the identity); these make subnetworks and messages active.
    ``kernel="folded"`` gives it the folded subnet kernel with ``conv_algorithm`` and ``conv_dtype`` (the
    batched attention kernel for attention messages); ``messages`` and ``kw`` go to the constructor; hidden
    defaults to 8.
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
        messages=messages,
        **kw,
    )
    flow = flow.to(dtype)
    if kernel == "folded":
        use_folded_convolutions(flow, conv_algorithm, conv_dtype)
    with torch.no_grad():
        for coupling in flow.couplings:
            for net in (coupling.subnet_a, coupling.subnet_b):
                net.gamma.uniform_(0.5, 1.5)
    return flow


@contextlib.contextmanager
def plain(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every subnet of ``module`` computes its plain form (its kernel set aside)."""
    subnets = [m for m in module.modules() if isinstance(m, CrossViewSubnet)]
    kernels = [subnet.kernel for subnet in subnets]
    for subnet in subnets:
        subnet.kernel = None
    try:
        yield module
    finally:
        for subnet, kernel in zip(subnets, kernels, strict=True):
            subnet.kernel = kernel
