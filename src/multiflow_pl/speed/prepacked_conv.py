"""A convolution weight laid out once in oneDNN's blocked format, for repeated CPU calls with fixed weights.

``F.conv2d`` on CPU hands oneDNN the weight in PyTorch's layout, and oneDNN copies it into its own blocked
layout on every call. For the flow's grouped convolutions in bfloat16 that copy takes longer than the
convolution itself at batch 1 (docs/benchmarks.md). :class:`PackedConvWeight` makes the copy once and then
calls the same oneDNN convolution with it (``torch.ops.mkldnn._convolution_pointwise``, the operator
TorchScript's ``optimize_for_inference`` and Inductor use for prepacked convolutions): the same values as
``F.conv2d`` bit for bit (tested). It does so only where ``F.conv2d`` itself would run oneDNN; elsewhere
(a GPU, float64, layouts PyTorch convolves with its own kernels) it calls ``F.conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_VALID = ([0, 0], [1, 1], [1, 1])
"""padding, stride and dilation of a 'valid' stride-1 convolution."""


def runs_on_onednn(image: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    """Whether ``F.conv2d(image, weight, groups=groups)`` ('valid', stride 1) runs oneDNN's convolution."""
    padding, stride, dilation = _VALID
    try:
        backend = torch._C._select_conv_backend(
            image, weight, None, stride, padding, dilation, False, [0, 0], groups, None
        )
    except (AttributeError, RuntimeError):  # a torch build without the query: convolve as F.conv2d does
        return False
    return backend == torch._C._ConvBackend.Mkldnn


class PackedConvWeight:
    """A convolution weight and its copy in oneDNN's layout, made at the first call that runs oneDNN.

    The weight must not change while the object is in use (it belongs to a block of kept folded weights:
    :func:`multiflow_pl.speed.folded_subnet.keep_folded_weights`).

    Args:
        weight: ``[G*Cout, Cin, k, k]``.
        groups: G, as in ``F.conv2d``.
    """

    def __init__(self, weight: torch.Tensor, groups: int) -> None:
        self.weight, self.groups = weight, groups
        self._packed: torch.Tensor | None = None

    def conv2d(self, image: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``F.conv2d(image, weight, bias, groups=groups)``, 'valid' and stride 1, with the same values:
        image ``[N, G*Cin, H, W]`` -> ``[N, G*Cout, H-k+1, W-k+1]`` (channels-last images stay channels-last).
        """
        if not runs_on_onednn(image, self.weight, self.groups):
            return F.conv2d(image, self.weight, bias, groups=self.groups)
        padding, stride, dilation = _VALID
        if self._packed is None:
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, padding, stride, dilation, self.groups, list(image.shape)
            )
        return torch.ops.mkldnn._convolution_pointwise(
            image, self._packed, bias, padding, stride, dilation, self.groups, "none", [], ""
        )
