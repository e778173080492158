"""EfficientNet-PyTorch's tensor names (``efficientnet-b5`` state dicts) on timm's EfficientNet.

EfficientNet-PyTorch numbers its blocks through the whole network (``_blocks.13``); timm numbers them per
stage (``blocks.3.0``). Within a block, names depend on whether it expands its channels first (timm's
``InvertedResidual``) or not (``DepthwiseSeparableConv``, the first stage):

================  =====================  ===========================
EfficientNet-PyTorch                     timm
---------------------------------------  ---------------------------
``_expand_conv``  ``_bn0``               ``conv_pw``  ``bn1``        (expanding blocks only)
``_depthwise_conv``  ``_bn1``            ``conv_dw``  ``bn2`` (expanding) / ``bn1`` (first stage)
``_se_reduce``  ``_se_expand``           ``se.conv_reduce``  ``se.conv_expand``
``_project_conv``  ``_bn2``              ``conv_pwl``  ``bn3`` (expanding) / ``conv_pw``  ``bn2``
================  =====================  ===========================

and outside the blocks ``_conv_stem``, ``_bn0``, ``_conv_head``, ``_bn1``, ``_fc`` are ``conv_stem``, ``bn1``,
``conv_head``, ``bn2``, ``classifier``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

TOP_LEVEL = {
    "conv_stem": "_conv_stem",
    "bn1": "_bn0",
    "conv_head": "_conv_head",
    "bn2": "_bn1",
    "classifier": "_fc",
}
EXPANDING_BLOCK = {
    "conv_pw": "_expand_conv",
    "bn1": "_bn0",
    "conv_dw": "_depthwise_conv",
    "bn2": "_bn1",
    "se.conv_reduce": "_se_reduce",
    "se.conv_expand": "_se_expand",
    "conv_pwl": "_project_conv",
    "bn3": "_bn2",
}
FIRST_STAGE_BLOCK = {
    "conv_dw": "_depthwise_conv",
    "bn1": "_bn1",
    "se.conv_reduce": "_se_reduce",
    "se.conv_expand": "_se_expand",
    "conv_pw": "_project_conv",
    "bn2": "_bn2",
}


def is_efficientnet_pytorch(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict uses EfficientNet-PyTorch's names (``_conv_stem.weight``, ``_blocks.0...``)."""
    return any(key.startswith(("_conv_stem.", "_blocks.")) for key in state)


def efficientnet_pytorch_names(model: nn.Module) -> dict[str, str]:
    """``{EfficientNet-PyTorch name: timm name}`` for every tensor of a timm EfficientNet ``model``, and for
    the classifier's (``_fc.weight``, ``_fc.bias``) also where the model was built without one.

    Raises ValueError for a model that is not a timm EfficientNet (no ``blocks`` of stages of blocks) or a
    tensor outside the table above.
    """
    if not isinstance(getattr(model, "blocks", None), nn.Sequential):
        raise ValueError(f"{type(model).__name__} is not a timm EfficientNet (it has no blocks).")
    prefixes = dict(TOP_LEVEL)
    flat = 0
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            table = EXPANDING_BLOCK if hasattr(block, "conv_pwl") else FIRST_STAGE_BLOCK
            prefixes.update(
                {f"blocks.{s}.{j}.{name}": f"_blocks.{flat}.{src}" for name, src in table.items()}
            )
            flat += 1
    names = {f"_fc.{tensor}": f"classifier.{tensor}" for tensor in ("weight", "bias")}
    for key in model.state_dict():
        module, _, tensor = key.rpartition(".")
        if module not in prefixes:
            raise ValueError(f"timm tensor {key} has no EfficientNet-PyTorch counterpart.")
        names[f"{prefixes[module]}.{tensor}"] = key
    return names
