"""Foreground masks at feature resolution: none, automatic (plain background) or read from a folder."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from multiflow_pl.data.errors import DatasetError
from multiflow_pl.data.images import read_mask

FOREGROUND_MODES = ("none", "auto", "folder")


def auto_foreground(
    images: torch.Tensor, feature_size: tuple[int, int], threshold: float = 0.12, border: int = 4
) -> torch.Tensor:
    """Foreground of objects on a plain background, per view.

    The background colour is the median of a ``border``-pixel frame; pixels farther than ``threshold``
    (RGB distance in [0,1] units) are foreground. The result is pooled to feature resolution and dilated by
    one cell so object borders count as foreground.

    Args:
        images: [V,3,H,W] in [0,1].
        feature_size: (h, w) of the feature maps.

    Returns:
        [V,h,w] float mask in {0,1}.
    """
    frame = torch.cat(
        [
            images[..., :border, :].flatten(2),
            images[..., -border:, :].flatten(2),
            images[..., :, :border].flatten(2),
            images[..., :, -border:].flatten(2),
        ],
        dim=2,
    )
    # The lower median, as torch.median gives it: the largest of the smallest half. An unsorted top-k is 3x
    # faster than a sort on CPU, and ONNX can express it (not kthvalue nor median).
    lower_half = frame.topk((frame.shape[2] - 1) // 2 + 1, dim=2, largest=False, sorted=False).values
    background = lower_half.amax(dim=2)[..., None, None]
    # Not Tensor.norm(dim=1), which reduces slowly over the strided channel axis on CPU; in place, so no
    # second image-sized buffer is allocated (the same values; timings in docs/benchmarks.md).
    distance = (images - background).square_().sum(dim=1, keepdim=True).sqrt_()
    pixel_fg = (distance > threshold).float()
    cell_fg = (F.adaptive_avg_pool2d(pixel_fg, feature_size) > 0.05).float()
    return F.max_pool2d(cell_fg, kernel_size=3, stride=1, padding=1).squeeze(1)


def folder_foreground(
    image_paths: list[Path], foreground_dir: Path, feature_size: tuple[int, int], flips: list[bool]
) -> torch.Tensor:
    """Masks made elsewhere (e.g. by a salient-object segmentation model): ``<dir>/<image stem>.png``.

    Returns:
        [V,h,w] float mask in {0,1} at feature resolution (dilated by one cell).
    """
    masks = []
    for path, flip in zip(image_paths, flips, strict=True):
        mask_path = foreground_dir / f"{path.stem}.png"
        if not mask_path.is_file():
            raise DatasetError(
                f"No foreground mask for {path.name}: expected {mask_path}. Write one PNG per image named by "
                f"the image's stem, or set data.foreground=auto|none."
            )
        masks.append(read_mask(mask_path, max(feature_size) * 8, flip=flip))
    pooled = (F.adaptive_avg_pool2d(torch.stack(masks), feature_size) > 0.05).float()
    return F.max_pool2d(pooled, kernel_size=3, stride=1, padding=1).squeeze(1)
