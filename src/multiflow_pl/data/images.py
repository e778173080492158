"""Reading images and masks from disk into tensors, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.io import read_file as read_bytes

from multiflow_pl.data.errors import DatasetError

WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""PIL modes of 16-bit (or wider integer) grayscale images, read as values in [0, 65535]."""
JPEG_SUFFIXES = (".jpg", ".jpeg")


def read_image(path: Path, size: int, flip: bool = False) -> torch.Tensor:
    """Read an image as RGB -> float [3,size,size] in [0,1].

    Grayscale is repeated over three channels, alpha is dropped, palette and CMYK images are converted,
    16-bit grayscale is scaled from [0, 65535] (PIL's own conversion would clip it to white). Images of
    any size are resized; floating-point images (unknown range) are refused.
    """
    tensor = _jpeg_pixels(path) if Path(path).suffix.lower() in JPEG_SUFFIXES else None
    if tensor is None:
        try:
            with Image.open(path) as img:
                img.load()
                tensor = _rgb_pixels(img, path)
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            raise DatasetError(f"Cannot read image {path}: {err}. Replace or remove the file.") from err
    if tensor.shape[1:] != (size, size):  # at the same size the resize is the identity, bit for bit
        tensor = F.interpolate(
            tensor[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0].clamp_(0.0, 1.0)  # rounded filter weights overshoot 1 by ~1e-7
    return tensor.flip(-1) if flip else tensor


def _jpeg_pixels(path: Path) -> torch.Tensor | None:
    """float32 [3,H,W] in [0,1] decoded by torchvision's libjpeg-turbo, or None where it cannot (PIL then
    reads the file, or says why not).

    The same pixels as PIL's decoder, bit for bit (tested on 4:2:0, 4:2:2, 4:4:4, progressive, grayscale and
    CMYK files), in about 0.7x the time with the float conversion.
    """
    try:
        pixels = decode_jpeg(read_bytes(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError:
        return None
    return pixels.contiguous().float().div_(255.0)  # decoded as [H,W,3] in memory: channels first as bytes


def _rgb_pixels(img: Image.Image, path: Path) -> torch.Tensor:
    """float32 [3,H,W] (contiguous) in [0,1] from an opened image.

    Channels are moved first while the pixels are still 8-bit, a quarter of the bytes a float copy would move.
    """
    if img.mode == "F":
        raise DatasetError(
            f"Image {path} holds floating-point pixels (mode F) of unknown range; save it as 8- or 16-bit."
        )
    if img.mode in WIDE_GRAY_MODES:
        gray = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
        return torch.from_numpy(gray).expand(3, *gray.shape).contiguous()
    channels_first = np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy()
    return torch.from_numpy(channels_first).float().div_(255.0)


def read_mask(
    path: Path | None, size: int, image_path: Path | None = None, flip: bool = False
) -> torch.Tensor:
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
