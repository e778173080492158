"""Reading images and masks from disk into tensors, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from multiflow_pl.data.errors import DatasetError


def read_image(path: Path, size: int, flip: bool = False) -> torch.Tensor:
    """Read an image as RGB (grayscale and RGBA are converted) -> float [3,size,size] in [0,1]."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DatasetError(f"Cannot read image {path}: {err}. Replace or remove the file.") from err
    tensor = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
    tensor = tensor.unsqueeze(0).float().div_(255.0)
    tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    tensor = tensor.squeeze(0).clamp_(0.0, 1.0)
    return tensor.flip(-1) if flip else tensor


def read_mask(path: Path | None, size: int, image_path: Path | None = None, flip: bool = False) -> torch.Tensor:
    """Read a binary mask -> float [1,size,size] in {0,1}; ``None`` gives an all-zero mask.

    When ``image_path`` is given the mask must have the image's width and height.
    """
    if path is None:
        return torch.zeros(1, size, size)
    try:
        with Image.open(path) as img:
            img.load()
            gray = img.convert("L")
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DatasetError(f"Cannot read mask {path}: {err}. Replace or remove the file.") from err
    if image_path is not None:
        with Image.open(image_path) as img:
            image_size = img.size
        if gray.size != image_size:
            raise DatasetError(
                f"Mask {path} is {gray.size[0]}x{gray.size[1]} but its image {image_path} is "
                f"{image_size[0]}x{image_size[1]}; masks must match their image's size."
            )
    mask = torch.from_numpy((np.asarray(gray) > 127).astype(np.float32))[None, None]
    mask = F.interpolate(mask, size=(size, size), mode="nearest").squeeze(0)
    return mask.flip(-1) if flip else mask
