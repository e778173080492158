"""The folded subnet kernel: a :class:`~multiflow_pl.models.messages.CrossViewSubnet` as a few batched
convolutions, the same function as its plain form (tested equal to it).

Tensors are pixel-major, ``[B, h, w, V, C]``: the convolutions then see channels-last images (fast on CPU
and GPU), and splitting channels or gathering views moves whole channel vectors.

The plain subnet (see :mod:`multiflow_pl.models.messages`) runs one small convolution per view and per
edge. Here all views' first convolutions are one grouped convolution, and the self conv, the messages, the
gammas and the 1/deg mean are folded into one convolution per in-degree: per edge, the input of view i is
[h_i, h_{n_1}, ..., h_{n_D}] with weight gamma_i [W_i, W_{n_1->i}/deg_i, ...] (views with equal D share a
grouped convolution, so no weight slot is zero); shared, the input is [h_i, mean_j h_j] with weight
gamma_i [W_i, M]. A zero noise map adds nothing (replicate padding keeps it zero), so without one its weights
are dropped.

Each convolution runs by ``algorithm``: ``"direct"`` (the library's, the default: same seed, same numbers),
``"winograd"`` (:mod:`multiflow_pl.speed.winograd`, CPU float32/64, 3x3 and 5x5) or ``"auto"`` (per
convolution the faster of the two, timed on this machine at first use, like cuDNN's benchmark mode:
:mod:`multiflow_pl.speed.conv_choice`). ``dtype="bfloat16"`` runs the convolutions in bfloat16 while
everything else, the coupling arithmetic and log-determinant included, stays in the input's dtype.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from multiflow_pl.models.messages import CrossViewSubnet
from multiflow_pl.speed import conv_choice
from multiflow_pl.speed.attention_subnet import BatchedAttentionKernel
from multiflow_pl.speed.prepacked_conv import PackedConvWeight

ConvAlgorithm = Literal["auto", "winograd", "direct"]
CONV_ALGORITHMS = ("direct", "auto", "winograd")
ConvDtype = Literal["bfloat16"] | None
CONV_DTYPES = {"bfloat16": torch.bfloat16}


class FoldedConv(NamedTuple):
    """One convolution of a subnet as it runs: its folded weight, bias and groups."""

    weight: torch.Tensor
    """[G*Cout, Cin, k, k]"""
    bias: torch.Tensor
    """[G*Cout]"""
    groups: int
    packed: PackedConvWeight | None = None
    """The weight laid out for oneDNN once, when kept by :func:`keep_folded_weights` (same values)."""


FoldedWeights = list[FoldedConv]
"""Per convolution of a subnet, in order: first, then output."""


def _slot_groups(adj: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """Input slots of the folded per-edge convolution, one group (one convolution) per in-degree.

    Views with the same number of senders share a grouped convolution whose input for view i is
    ``[h_i, h_{n_1}, ..., h_{n_D}]``, so no slot is empty (a single convolution over all views would need
    zero weights for the missing edges: in top_ring 4 of 25 slots). Returns per group, in order of each
    group's first view, ``(views [G], source_view [G, S] or None, bank_index [G, S])``; the weight bank is
    ``cat(self weights [V], edge weights [E])`` with edges numbered in ``adj.nonzero()`` order.
    ``source_view`` None means the group's views hear from all others: slot s is view s (no gather, one
    ungrouped convolution over all views).
    """
    n_views = adj.shape[0]
    edge_index = torch.full((n_views, n_views), -1, dtype=torch.long)
    edge_index[adj] = torch.arange(int(adj.sum()))
    degrees = adj.sum(1).tolist()
    groups = []
    for degree in dict.fromkeys(degrees):  # distinct in-degrees, in order of first view
        views = torch.tensor([v for v in range(n_views) if degrees[v] == degree])
        if degree == n_views - 1:
            bank = n_views + edge_index[views]
            bank[torch.arange(len(views)), views] = views
            groups.append((views, None, bank))
            continue
        source = torch.stack([torch.cat([v.view(1), adj[v].nonzero().flatten()]) for v in views])
        bank = torch.cat([views[:, None], n_views + edge_index[views[:, None], source[:, 1:]]], dim=1)
        groups.append((views, source, bank))
    return groups


class FoldedSubnetKernel(nn.Module):
    """Computes a :class:`CrossViewSubnet` as batched, folded convolutions (a
    :class:`~multiflow_pl.models.messages.SubnetKernel`; set by :func:`use_folded_convolutions`).

    It holds only the subnet's graph structure (index buffers); the weights are the subnet's own, folded at
    every call (or once per :func:`keep_folded_weights` block).

    Args:
        subnet: the subnet it computes (its views, edges, message weights and device).
        algorithm: ``"direct"``, ``"winograd"`` or ``"auto"`` (see the module doc).
        dtype: None (convolutions in the parameters' dtype) or ``"bfloat16"``: convolution inputs, weights
            and biases are rounded to bfloat16, the hidden maps stay in bfloat16 and the outputs are returned
            in the input's dtype (float32 parameters only; a float64 subnet, as in the exactness checks, is
            left alone).
    """

    def __init__(
        self, subnet: CrossViewSubnet, algorithm: ConvAlgorithm = "direct", dtype: ConvDtype = None
    ) -> None:
        super().__init__()
        if subnet.attention is not None:
            raise ValueError(
                f"The folded kernel computes conv messages only, not {subnet.messages}: use "
                "BatchedAttentionKernel (use_folded_convolutions does)."
            )
        if algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"conv_algorithm must be 'auto', 'winograd' or 'direct', got {algorithm!r}.")
        self.algorithm = algorithm
        self._folded: dict[bool, FoldedWeights] | None = None  # see keep_folded_weights
        self._pack_kept = True  # lay kept weights out for oneDNN (keep_folded_weights' pack)
        self.set_dtype(dtype)
        n_views = subnet.n_views
        self.kernel_size, self.hidden = subnet.kernel_size, subnet.hidden
        adjacency = torch.zeros(n_views, n_views, dtype=torch.bool)
        adjacency[tuple(subnet.edges.cpu().T)] = True
        self.dense_groups: tuple[bool, ...] = ()
        if subnet.n_edges:
            # Degrees are stored as counts and divided in the forward pass, exact in any dtype.
            self.register_buffer("in_degree", adjacency.sum(1).float().clamp(min=1), persistent=False)
            self.register_buffer("has_senders", adjacency.any(1).float(), persistent=False)
            self.register_buffer("adjacency", adjacency.float(), persistent=False)
            groups = _slot_groups(adjacency)
            self.dense_groups = tuple(source is None for _, source, _ in groups)
            for g, (views, source, bank) in enumerate(groups):
                self.register_buffer(f"slot{g}_views", views, persistent=False)
                self.register_buffer(f"slot{g}_source", source, persistent=False)
                self.register_buffer(f"slot{g}_bank", bank, persistent=False)
                self.register_buffer(f"slot{g}_is_self", (bank < n_views).float(), persistent=False)
            order = torch.cat([views for views, _, _ in groups])
            self.register_buffer(
                "slot_view_order",
                None if torch.equal(order, torch.arange(n_views)) else order.argsort(),
                persistent=False,
            )
        self.to(subnet.first_weight.device, subnet.first_weight.dtype)  # the index buffers stay integer

    def set_dtype(self, dtype: ConvDtype) -> None:
        """Run the convolutions in ``dtype`` from now on (see the class doc)."""
        if dtype is not None and dtype not in CONV_DTYPES:
            raise ValueError(f"conv_dtype must be null or 'bfloat16', got {dtype!r}.")
        self.dtype = dtype
        if self._folded:  # weights kept by keep_folded_weights are in the old dtype
            self._folded = {}

    def portable(self) -> FoldedSubnetKernel:
        """This kernel with the library's convolutions: Winograd's chunking follows the batch size, which an
        export keeps symbolic (the same function up to rounding, on every device)."""
        kernel = copy.deepcopy(self)
        kernel.algorithm, kernel._folded = "direct", None
        return kernel

    def _conv(
        self, pixels: torch.Tensor, conv: FoldedConv, out_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Replicate-padded 'same' convolution of pixel-major ``[B, h, w, Cin]`` -> ``[B, h, w, Cout]``.

        The convolution sees a channels-last image (a view), so no layout conversion is needed; the
        algorithm is the chosen one (the library's runs on the kept oneDNN weight where there is one). It
        runs in the dtype of the folded weight (bfloat16 with ``dtype``), and so does its result unless
        ``out_dtype`` is given.
        """
        weight, bias, groups = conv.weight, conv.bias, conv.groups
        image = pixels.to(weight.dtype).permute(0, 3, 1, 2)
        p = self.kernel_size // 2
        if p:
            image = F.pad(image, (p, p, p, p), mode="replicate")
        if self.algorithm == "auto":
            algorithm = conv_choice.default_chooser().choose(image, weight, bias, groups)
        elif self.algorithm == "winograd" and "winograd" in conv_choice.candidates(image, weight):
            algorithm = "winograd"
        else:
            algorithm = "direct"
        if algorithm == "direct" and conv.packed is not None:
            out = conv.packed.conv2d(image, bias)
        else:
            out = conv_choice.conv2d(image, weight, bias, groups, algorithm)
        return out.permute(0, 2, 3, 1).to(out_dtype or weight.dtype)

    def _per_edge_weights(self, subnet: CrossViewSubnet) -> FoldedWeights:
        """Folded self + per-edge message weights, one ``(weight, bias, groups)`` per slot group (see
        :func:`_slot_groups`)."""
        c_out, k = 2 * subnet.out_channels, self.kernel_size
        weight_bank = torch.cat([subnet.self_weight, subnet.message_weight])
        bias_bank = torch.cat([subnet.self_bias, subnet.message_bias])
        folded = []
        for g, dense in enumerate(self.dense_groups):
            views, bank = getattr(self, f"slot{g}_views"), getattr(self, f"slot{g}_bank")
            is_self = getattr(self, f"slot{g}_is_self")
            scale = is_self + (1 - is_self) / self.in_degree[views, None]
            coef = subnet.gamma[views, None] * scale  # [G, S]
            n_group, n_slots = bank.shape
            weight = weight_bank[bank.flatten()].view(n_group, n_slots, c_out, self.hidden, k, k)
            weight = (weight * coef[:, :, None, None, None, None]).transpose(1, 2)
            weight = weight.reshape(n_group * c_out, n_slots * self.hidden, k, k)
            bias = (bias_bank[bank] * coef[:, :, None]).sum(1).flatten()
            folded.append((weight, bias, 1 if dense else n_group))  # dense views read all views: ungrouped
        return folded

    def _per_edge_inputs(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Inputs of the per-edge convolutions from ``hidden [B, h, w, V, hid]``: per slot group
        ``[B, h, w, G*S*hid]`` (or all views' ``[B, h, w, V*hid]`` for a dense group)."""
        inputs = []
        for g, dense in enumerate(self.dense_groups):
            source = getattr(self, f"slot{g}_source")
            inputs.append(hidden.flatten(3) if dense else hidden.index_select(3, source.flatten()).flatten(3))
        return inputs

    def _shared_weights(self, subnet: CrossViewSubnet) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Folded self + shared message weights for the input [h_i, mean_j h_j]: (weight, bias, groups)."""
        n_views = subnet.n_views
        weight = torch.cat([subnet.self_weight, subnet.message_weight.expand_as(subnet.self_weight)], dim=2)
        weight = subnet.gamma.view(n_views, 1, 1, 1, 1) * weight
        weight = weight.view(n_views * 2 * subnet.out_channels, 2 * self.hidden, *weight.shape[-2:])
        bias = subnet.gamma[:, None] * (subnet.self_bias + self.has_senders[:, None] * subnet.message_bias)
        return weight, bias.flatten(), n_views

    def _shared_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [B, h, w, V, hid]`` -> [h_i, mean_{j in N(i)} h_j] of all views ``[B, h, w, V*2*hid]``."""
        mean = torch.einsum("ij,bhwjc->bhwic", self.adjacency / self.in_degree[:, None], hidden)
        return torch.cat([hidden, mean], dim=-1).flatten(3)

    def _fold_weights(self, subnet: CrossViewSubnet, with_noise: bool) -> FoldedWeights:
        """All convolution weights of ``subnet`` as its folded convolutions take them (see the module doc)."""
        n_views, k = subnet.n_views, self.kernel_size
        first_weight = subnet.first_weight if with_noise else subnet.first_weight[:, :, : subnet.in_channels]
        first = (first_weight.reshape(n_views * self.hidden, -1, k, k), subnet.first_bias.flatten(), n_views)
        if subnet.n_edges == 0:
            weight = (subnet.gamma.view(n_views, 1, 1, 1, 1) * subnet.self_weight).flatten(0, 1)
            output = [(weight, (subnet.gamma[:, None] * subnet.self_bias).flatten(), n_views)]
        elif subnet.message_weights == "per_edge":
            output = self._per_edge_weights(subnet)
        else:
            output = [self._shared_weights(subnet)]
        folded = [first, *output]
        if self.dtype is not None and subnet.first_weight.dtype == torch.float32:
            dtype = CONV_DTYPES[self.dtype]
            folded = [(weight.to(dtype), bias.to(dtype), groups) for weight, bias, groups in folded]
        return [FoldedConv(*conv) for conv in folded]

    def folded_weights(self, subnet: CrossViewSubnet, with_noise: bool) -> FoldedWeights:
        """:meth:`_fold_weights`, or inside :func:`keep_folded_weights` (and no gradient recorded) its
        result of the first call, each weight also laid out for oneDNN at its first use there."""
        if self._folded is None or torch.is_grad_enabled():
            return self._fold_weights(subnet, with_noise)
        if with_noise not in self._folded:
            self._folded[with_noise] = [
                conv._replace(packed=PackedConvWeight(conv.weight, conv.groups) if self._pack_kept else None)
                for conv in self._fold_weights(subnet, with_noise)
            ]
        return self._folded[with_noise]

    def forward(
        self, subnet: CrossViewSubnet, u: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`CrossViewSubnet.plain_forward`: pixel-major ``u [B, h, w, V, Cc]``,
        ``cond [B, h, w, 1|V, n]`` or None (zeros) -> ``(log_s_raw, t)``, each ``[B, h, w, V, Ct]``."""
        batch, height, width, n_views, _ = u.shape
        with_noise = cond is not None and subnet.noise_channels > 0
        if with_noise:
            cond = cond.expand(batch, height, width, n_views, -1)
            inputs = torch.cat([u, cond], dim=-1).flatten(3)
        else:  # a zero noise map adds nothing (replicate padding keeps it zero): its weights are dropped
            inputs = u.flatten(3)
        first, *output = self.folded_weights(subnet, with_noise)
        # The hidden maps stay in the convolutions' dtype: rounding commutes with relu and gathers.
        hidden = F.relu(self._conv(inputs, first)).unflatten(3, (n_views, self.hidden))
        if subnet.n_edges == 0:
            hiddens = [hidden.flatten(3)]
        elif subnet.message_weights == "per_edge":
            hiddens = self._per_edge_inputs(hidden)
        else:
            hiddens = [self._shared_input(hidden.to(u.dtype))]  # the neighbour mean in u's precision
        outs = [self._conv(x, conv, out_dtype=u.dtype) for x, conv in zip(hiddens, output, strict=True)]
        out = (outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)).unflatten(3, (n_views, -1))
        if subnet.message_weights == "per_edge" and subnet.n_edges and self.slot_view_order is not None:
            out = out.index_select(3, self.slot_view_order)
        return out.split(subnet.out_channels, dim=-1)

    def extra_repr(self) -> str:
        return f"algorithm={self.algorithm}, dtype={self.dtype}"


def _kernels(module: nn.Module) -> list[FoldedSubnetKernel]:
    return [m for m in module.modules() if isinstance(m, FoldedSubnetKernel)]


def use_folded_convolutions(
    module: nn.Module, algorithm: ConvAlgorithm = "direct", dtype: ConvDtype = None
) -> nn.Module:
    """Give every :class:`CrossViewSubnet` in ``module`` with conv messages a :class:`FoldedSubnetKernel`
    (replacing any it had), and those with attention messages a
    :class:`~multiflow_pl.speed.attention_subnet.BatchedAttentionKernel` (library convolutions in the
    parameters' dtype: ``algorithm`` and ``dtype`` are for conv messages); returns ``module``."""
    for subnet in [m for m in module.modules() if isinstance(m, CrossViewSubnet)]:
        if subnet.attention is None:
            subnet.kernel = FoldedSubnetKernel(subnet, algorithm, dtype)
        else:
            subnet.kernel = BatchedAttentionKernel(subnet)
    return module


def set_conv_dtype(module: nn.Module, dtype: ConvDtype) -> None:
    """Run the convolutions of every folded subnet in ``module`` in ``dtype`` from now on, e.g. to score
    faster with a model trained in float32."""
    kernels = _kernels(module)
    if not kernels:
        raise ValueError(
            "set_conv_dtype needs folded subnets: call use_folded_convolutions first (flows with attention "
            "messages have none: their batched kernel computes in the parameters' dtype; set "
            "flow_conv_dtype=null)."
        )
    for kernel in kernels:
        kernel.set_dtype(dtype)


def conv_settings(module: nn.Module) -> dict[str, str | None]:
    """How ``module``'s first subnet computes: ``{"kernel": "plain" | "folded" | "attention", "algorithm",
    "dtype"}`` (the batched attention kernel runs the library's convolutions in the parameters' dtype)."""
    subnet = next(m for m in module.modules() if isinstance(m, CrossViewSubnet))
    if isinstance(subnet.kernel, FoldedSubnetKernel):
        return {"kernel": "folded", "algorithm": subnet.kernel.algorithm, "dtype": subnet.kernel.dtype}
    if subnet.kernel is None:
        return {"kernel": "plain", "algorithm": None, "dtype": None}
    return {"kernel": "attention", "algorithm": "direct", "dtype": None}


@contextlib.contextmanager
def keep_folded_weights(module: nn.Module, pack: bool = True) -> Iterator[None]:
    """Within the block, every folded subnet in ``module`` folds its weights once and reuses them.

    Scoring folds the self, message and gate weights into its convolutions' weights in every call (at batch
    1 a noticeable share of the flow's time: docs/benchmarks.md). With ``pack`` (the default), each kept
    weight is also laid out for oneDNN at its first CPU use
    (:class:`~multiflow_pl.speed.prepacked_conv.PackedConvWeight`: the same values). Like
    ``torch.nn.utils.parametrize.cached``, the block promises that the parameters do not change inside it;
    calls that record gradients fold afresh anyway. Blocks nest (an inner block keeps the outer's
    ``pack``); the folded weights are dropped on leaving the outermost.
    """
    kernels = _kernels(module)
    previous = [(kernel._folded, kernel._pack_kept) for kernel in kernels]
    for kernel, (kept, packs) in zip(kernels, previous, strict=True):
        kernel._folded, kernel._pack_kept = ({}, pack) if kept is None else (kept, packs)
    try:
        yield
    finally:
        for kernel, (kept, packs) in zip(kernels, previous, strict=True):
            kernel._folded, kernel._pack_kept = kept, packs
