"""Cross-view subnetwork of one coupling step: all views at once, as batched grouped convolutions.

Tensors are pixel-major, ``[B, h, w, V, C]``: the convolutions then see channels-last images (fast on CPU
and GPU), and splitting channels or gathering views moves whole channel vectors.

For view i (own weights per view), with u_i its conditioning half and replicate padding everywhere:

    h_i   = relu(conv_k(cat(u_i, noise)))                                hidden activation
    out_i = gamma_i * (conv_k(h_i) + mean_{j in N(i)} M_{j->i}(h_j))     2*Ct channels -> (log_s_raw, t)

gamma_i (one scalar per view, initialised to 0) gates the whole output, own path and messages alike, as in
the paper and CS-Flow: a new coupling is the identity, so a new flow is its channel permutations alone.
M_{j->i} is a conv k x k with own weights per directed edge (``"per_edge"``, the paper) or one conv shared by
all edges (``"shared"``). The self conv, the messages, the gammas and the 1/deg mean are folded into one
convolution per in-degree: per edge, the input of view i is [h_i, h_{n_1}, ..., h_{n_D}] with weight
gamma_i [W_i, W_{n_1->i}/deg_i, ...] (views with equal D share a grouped convolution, so no weight slot is
zero); shared, the input is [h_i, mean_j h_j] with weight gamma_i [W_i, M].

Each convolution runs by the algorithm measured fastest on the running machine (``conv_algorithm="auto"``,
see :mod:`multiflow_pl.models.conv_choice`): the library's or a Winograd convolution
(:mod:`multiflow_pl.models.winograd`), the same function up to rounding. ``conv_dtype="bfloat16"`` runs the
convolutions in bfloat16 (fast on CPUs with AMX or AVX-512 bf16, and on GPUs) while everything else, the
coupling arithmetic and log-determinant included, stays in the input's dtype.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from multiflow_pl.models import conv_choice
from multiflow_pl.models.packed_weight import PackedConvWeight

MessageWeights = Literal["per_edge", "shared"]
ConvAlgorithm = Literal["auto", "winograd", "direct"]
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


def _uniform_init(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


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


class CrossViewSubnet(nn.Module):
    """Maps the conditioning halves of all views to (log_s_raw, t) for their transformed halves.

    Args:
        in_channels: Cc, channels of the conditioning half.
        out_channels: Ct, channels of the transformed half (the conv predicts 2*Ct).
        adjacency: ``[V, V]`` bool, ``adjacency[i, j]``: view j sends to view i.
        kernel_size: k of all three convs (odd).
        hidden: hidden channels per view.
        noise_channels: extra input channels for the noise-conditioning map.
        message_weights: ``"per_edge"`` or ``"shared"``.
        conv_algorithm: ``"auto"``: for each convolution the faster of the library's and the Winograd
            convolution, timed on this machine at first use (:mod:`multiflow_pl.models.conv_choice`);
            ``"winograd"``: Winograd for every 3x3 and 5x5 kernel in float32/64; ``"direct"``: always the
            library's.
        conv_dtype: None (convolutions in the parameters' dtype) or ``"bfloat16"``: convolution inputs,
            weights and biases are rounded to bfloat16, the hidden maps stay in bfloat16 and the outputs are
            returned in the input's dtype (float32 parameters only; a float64 subnet, as in the exactness
            checks, is left alone).
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
        conv_algorithm: ConvAlgorithm = "auto",
        conv_dtype: ConvDtype = None,
    ) -> None:
        super().__init__()
        if message_weights not in ("per_edge", "shared"):
            raise ValueError(f"message_weights must be 'per_edge' or 'shared', got {message_weights!r}.")
        if conv_algorithm not in ("auto", "winograd", "direct"):
            raise ValueError(
                f"conv_algorithm must be 'auto', 'winograd' or 'direct', got {conv_algorithm!r}."
            )
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the map size, got {kernel_size}.")
        n_views = adjacency.shape[0]
        self.n_views, self.in_channels, self.out_channels = n_views, in_channels, out_channels
        self.kernel_size, self.hidden, self.noise_channels = kernel_size, hidden, noise_channels
        self.message_weights, self.conv_algorithm = message_weights, conv_algorithm
        self._folded: dict[bool, FoldedWeights] | None = None  # see keep_folded_weights
        self._pack_kept = True  # lay kept weights out for oneDNN (keep_folded_weights' pack)
        self.set_conv_dtype(conv_dtype)
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
        if self.n_edges == 0:
            return
        n_kernels = self.n_edges if message_weights == "per_edge" else 1
        self.message_weight = _uniform_init((n_kernels, c_out, hidden, k, k), hidden * k * k)
        self.message_bias = _uniform_init((n_kernels, c_out), hidden * k * k)
        # Degrees are stored as counts and divided in the forward pass, exact in any dtype.
        self.register_buffer("in_degree", adjacency.sum(1).float().clamp(min=1), persistent=False)
        self.register_buffer("has_senders", adjacency.any(1).float(), persistent=False)
        if message_weights == "shared":
            self.register_buffer("adjacency", adjacency.float(), persistent=False)
        else:
            groups = _slot_groups(adjacency)
            self.slot_dense = tuple(source is None for _, source, _ in groups)
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

    def set_conv_dtype(self, conv_dtype: ConvDtype) -> None:
        """Run the convolutions in ``conv_dtype`` from now on (see the class doc)."""
        if conv_dtype is not None and conv_dtype not in CONV_DTYPES:
            raise ValueError(f"conv_dtype must be null or 'bfloat16', got {conv_dtype!r}.")
        self.conv_dtype = conv_dtype
        if self._folded:  # weights kept by keep_folded_weights are in the old dtype
            self._folded = {}

    def _conv(
        self, pixels: torch.Tensor, conv: FoldedConv, out_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Replicate-padded 'same' convolution of pixel-major ``[B, h, w, Cin]`` -> ``[B, h, w, Cout]``.

        The convolution sees a channels-last image (a view), so no layout conversion is needed; the
        algorithm is the chosen one (see ``conv_algorithm``; the library's runs on the kept oneDNN weight
        where there is one). It runs in the dtype of the folded weight (bfloat16 with ``conv_dtype``), and so
        does its result unless ``out_dtype`` is given.
        """
        weight, bias, groups = conv.weight, conv.bias, conv.groups
        image = pixels.to(weight.dtype).permute(0, 3, 1, 2)
        p = self.kernel_size // 2
        if p:
            image = F.pad(image, (p, p, p, p), mode="replicate")
        if self.conv_algorithm == "auto":
            algorithm = conv_choice.default_chooser().choose(image, weight, bias, groups)
        elif self.conv_algorithm == "winograd" and "winograd" in conv_choice.candidates(image, weight):
            algorithm = "winograd"
        else:
            algorithm = "direct"
        if algorithm == "direct" and conv.packed is not None:
            out = conv.packed.conv2d(image, bias)
        else:
            out = conv_choice.conv2d(image, weight, bias, groups, algorithm)
        return out.permute(0, 2, 3, 1).to(out_dtype or weight.dtype)

    def _per_edge_weights(self) -> FoldedWeights:
        """Folded self + per-edge message weights, one ``(weight, bias, groups)`` per slot group (see
        :func:`_slot_groups`)."""
        c_out, k = 2 * self.out_channels, self.kernel_size
        weight_bank = torch.cat([self.self_weight, self.message_weight])
        bias_bank = torch.cat([self.self_bias, self.message_bias])
        folded = []
        for g, dense in enumerate(self.slot_dense):
            views, bank = getattr(self, f"slot{g}_views"), getattr(self, f"slot{g}_bank")
            is_self = getattr(self, f"slot{g}_is_self")
            scale = is_self + (1 - is_self) / self.in_degree[views, None]
            coef = self.gamma[views, None] * scale  # [G, S]
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
        for g, dense in enumerate(self.slot_dense):
            source = getattr(self, f"slot{g}_source")
            inputs.append(hidden.flatten(3) if dense else hidden.index_select(3, source.flatten()).flatten(3))
        return inputs

    def _shared_weights(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Folded self + shared message weights for the input [h_i, mean_j h_j]: (weight, bias, groups)."""
        n_views = self.n_views
        weight = torch.cat([self.self_weight, self.message_weight.expand_as(self.self_weight)], dim=2)
        weight = self.gamma.view(n_views, 1, 1, 1, 1) * weight
        weight = weight.view(n_views * 2 * self.out_channels, 2 * self.hidden, *weight.shape[-2:])
        bias = self.gamma[:, None] * (self.self_bias + self.has_senders[:, None] * self.message_bias)
        return weight, bias.flatten(), n_views

    def _shared_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [B, h, w, V, hid]`` -> [h_i, mean_{j in N(i)} h_j] of all views ``[B, h, w, V*2*hid]``."""
        mean = torch.einsum("ij,bhwjc->bhwic", self.adjacency / self.in_degree[:, None], hidden)
        return torch.cat([hidden, mean], dim=-1).flatten(3)

    def _fold_weights(self, with_noise: bool) -> FoldedWeights:
        """All convolution weights of this subnet as its convolutions take them (see the module doc)."""
        n_views, k = self.n_views, self.kernel_size
        first_weight = self.first_weight if with_noise else self.first_weight[:, :, : self.in_channels]
        first = (first_weight.reshape(n_views * self.hidden, -1, k, k), self.first_bias.flatten(), n_views)
        if self.n_edges == 0:
            weight = (self.gamma.view(n_views, 1, 1, 1, 1) * self.self_weight).flatten(0, 1)
            output = [(weight, (self.gamma[:, None] * self.self_bias).flatten(), n_views)]
        elif self.message_weights == "per_edge":
            output = self._per_edge_weights()
        else:
            output = [self._shared_weights()]
        folded = [first, *output]
        if self.conv_dtype is not None and self.first_weight.dtype == torch.float32:
            dtype = CONV_DTYPES[self.conv_dtype]
            folded = [(weight.to(dtype), bias.to(dtype), groups) for weight, bias, groups in folded]
        return [FoldedConv(*conv) for conv in folded]

    def folded_weights(self, with_noise: bool) -> FoldedWeights:
        """:meth:`_fold_weights`, or inside :func:`keep_folded_weights` (and no gradient recorded) its
        result of the first call, each weight also laid out for oneDNN at its first use there."""
        if self._folded is None or torch.is_grad_enabled():
            return self._fold_weights(with_noise)
        if with_noise not in self._folded:
            self._folded[with_noise] = [
                conv._replace(packed=PackedConvWeight(conv.weight, conv.groups) if self._pack_kept else None)
                for conv in self._fold_weights(with_noise)
            ]
        return self._folded[with_noise]

    def forward(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-major ``u [B, h, w, V, Cc]``, ``cond [B, h, w, 1|V, noise_channels]`` or None (zeros).

        Returns ``(log_s_raw, t)``, each ``[B, h, w, V, Ct]``.
        """
        batch, height, width, n_views, _ = u.shape
        with_noise = cond is not None and self.noise_channels > 0
        if with_noise:
            cond = cond.expand(batch, height, width, n_views, -1)
            inputs = torch.cat([u, cond], dim=-1).flatten(3)
        else:  # a zero noise map adds nothing (replicate padding keeps it zero): its weights are dropped
            inputs = u.flatten(3)
        first, *output = self.folded_weights(with_noise)
        # The hidden maps stay in the convolutions' dtype: rounding commutes with relu and gathers.
        hidden = F.relu(self._conv(inputs, first)).unflatten(3, (n_views, self.hidden))
        if self.n_edges == 0:
            hiddens = [hidden.flatten(3)]
        elif self.message_weights == "per_edge":
            hiddens = self._per_edge_inputs(hidden)
        else:
            hiddens = [self._shared_input(hidden.to(u.dtype))]  # the neighbour mean in u's precision
        outs = [self._conv(x, conv, out_dtype=u.dtype) for x, conv in zip(hiddens, output, strict=True)]
        out = (outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)).unflatten(3, (n_views, -1))
        if self.message_weights == "per_edge" and self.n_edges and self.slot_view_order is not None:
            out = out.index_select(3, self.slot_view_order)
        return out.split(self.out_channels, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, views={self.n_views}, edges={self.n_edges}, "
            f"k={self.kernel_size}, hidden={self.hidden}, noise={self.noise_channels}, "
            f"messages={self.message_weights}, conv={self.conv_algorithm}, conv_dtype={self.conv_dtype}"
        )


@contextlib.contextmanager
def keep_folded_weights(module: nn.Module, pack: bool = True) -> Iterator[None]:
    """Within the block, every :class:`CrossViewSubnet` in ``module`` folds its weights once and reuses them.

    Scoring folds the self, message and gate weights into its convolutions' weights in every call; at batch
    1 that is about a fifth of the flow's time. With ``pack`` (the default), each kept weight is also laid out
    for oneDNN at its first CPU use (:class:`~multiflow_pl.models.packed_weight.PackedConvWeight`: the same
    values; docs/benchmarks.md has the speed). Like ``torch.nn.utils.parametrize.cached``, the block
    promises that the parameters do not change inside it; calls that record gradients fold afresh anyway.
    Blocks nest (an inner block keeps the outer's ``pack``); the folded weights are dropped on leaving the
    outermost.
    """
    subnets = [m for m in module.modules() if isinstance(m, CrossViewSubnet)]
    previous = [(subnet._folded, subnet._pack_kept) for subnet in subnets]
    for subnet, (kept, packs) in zip(subnets, previous, strict=True):
        subnet._folded, subnet._pack_kept = ({}, pack) if kept is None else (kept, packs)
    try:
        yield
    finally:
        for subnet, (kept, packs) in zip(subnets, previous, strict=True):
            subnet._folded, subnet._pack_kept = kept, packs
