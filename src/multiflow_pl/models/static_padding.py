"""TensorFlow "same" padding fixed for one build size, as EfficientNet-PyTorch pads.

TF "same" padding depends on the input size. timm's ``tf_*`` models pad every strided convolution for the
size they are given (``Conv2dSame``). EfficientNet-PyTorch instead fixes each convolution's padding when the
model is built, for the model's default input size (456 px for EfficientNet-B5), and keeps it for any input:
a convolution whose input is ``n`` px at the build size pads ``same_padding(n, ...)`` at every size. Where the
two rules disagree, the features move (at 768 px, two of B5's stride-2 depthwise convolutions).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, register_notrace_module
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "same" padding (before, after) of one axis of ``size`` px: the output has ceil(size / stride)
    px, and the odd pixel of an uneven total goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


# a leaf of the backbone's truncation (symbolic tracing): it stays one inspectable module
@register_notrace_module
class StaticSamePadConv2d(nn.Conv2d):
    """A convolution that zero-pads its input by a fixed ``(left, right, top, bottom)``, whatever its size,
    then convolves without padding. Same parameters (and state-dict keys) as ``nn.Conv2d``."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        self.static_pad = tuple(int(p) for p in pad)
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N,C,H,W] -> [N,C',H',W'], padded by ``static_pad`` first."""
        return F.conv2d(
            F.pad(x, self.static_pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, static_pad={self.static_pad}"


def build_size_inputs(model: nn.Module, build_size: int) -> dict[str, tuple[int, int]]:
    """Input (height, width) of every ``Conv2dSame`` of ``model`` for a ``build_size`` square image.

    Found by a forward pass of a copy of the model on the meta device (shapes only, no arithmetic).
    """
    shadow = copy.deepcopy(model).to("meta")
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            sizes.setdefault(name, tuple(args[0].shape[-2:]))

        return hook

    hooks = [
        module.register_forward_pre_hook(record(name))
        for name, module in shadow.named_modules()
        if isinstance(module, Conv2dSame)
    ]
    with torch.no_grad():
        shadow(torch.empty(1, 3, build_size, build_size, device="meta"))
    for hook in hooks:
        hook.remove()
    return sizes


def fix_same_padding(model: nn.Module, build_size: int) -> dict[str, tuple[int, int, int, int]]:
    """Replace every input-size-dependent TF-same convolution of ``model`` (timm's ``Conv2dSame``) by a
    :class:`StaticSamePadConv2d` padded as TF "same" pads it at ``build_size`` px (in place).

    Returns ``{module name: (left, right, top, bottom)}``. Convolutions timm already pads statically
    (stride 1, where TF "same" does not depend on the size) are left as they are.
    """
    pads: dict[str, tuple[int, int, int, int]] = {}
    for name, (height, width) in build_size_inputs(model, build_size).items():
        conv = model.get_submodule(name)
        top, bottom = same_padding(height, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        left, right = same_padding(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        pads[name] = (left, right, top, bottom)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, StaticSamePadConv2d(conv, pads[name]))
    return pads
