"""Reading images and masks from disk into tensors, with errors that name the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.io import read_file as read_bytes

from multiflow_pl.data.errors import DatasetError, UnreadableImageError

WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""PIL modes of 16-bit (or wider integer) grayscale images, read as values in [0, 65535]."""
JPEG_SUFFIXES = (".jpg", ".jpeg")
RESIZE_MODES = ("float", "pil")
"""How images are resized: ``float`` (bilinear with antialiasing on float pixels) or ``pil`` (PIL's bilinear
on 8-bit pixels, rounded to 8 bits after each of its two passes, as the paper's reference resizes)."""


def read_image(path: Path, size: int, flip: bool = False, resize: str = "float") -> torch.Tensor:
    """Read an image as RGB -> float [3,size,size] in [0,1].

    Grayscale is repeated over three channels, alpha is dropped, palette and CMYK images are converted,
    16-bit grayscale is scaled from [0, 65535] (PIL's own conversion would clip it to white). Images of
    any size are resized (``resize``: one of :data:`RESIZE_MODES`; ``pil`` resizes 8-bit images only,
    others as ``float``); floating-point images (unknown range) are refused.
    """
    image = torch.empty(3, size, size)
    _read_into(image, path, flip, resize)
    return image


def read_views(
    paths: Sequence[Path],
    size: int,
    flips: Sequence[bool],
    resize: str = "float",
    failures: dict[int, UnreadableImageError] | None = None,
) -> torch.Tensor:
    """Read one sample's view images -> float [V,3,size,size] in [0,1], each as :func:`read_image` reads it.

    The views are decoded into one tensor: a JPEG at the target size goes from its bytes to its slot in one
    pass, with no image-sized float copy per view and no stacking copy (what that saves: docs/benchmarks.md).
    A view that cannot be read raises :class:`UnreadableImageError`; with ``failures`` it is recorded there
    under its index instead (its slot left unfilled) and the other views are still read, so that every
    unreadable view of the sample is known.
    """
    views = torch.empty(len(paths), 3, size, size)
    for index, (slot, path, flip) in enumerate(zip(views, paths, flips, strict=True)):
        try:
            _read_into(slot, path, flip, resize)
        except UnreadableImageError as err:
            if failures is None:
                raise
            failures[index] = err
    return views


def unreadable_image(path: Path, err: Exception) -> UnreadableImageError:
    """The error for an image file that failed to open or decode (``err``), of the kind the file shows."""
    path = Path(path)
    if not path.is_file():
        kind, reason = "missing", "no such file"
    elif path.stat().st_size == 0:
        kind, reason = "empty", "0-byte file"
    elif isinstance(err, UnidentifiedImageError):
        kind, reason = "not_image", "not an image file"
    else:
        kind, reason = "damaged", str(err)
    return UnreadableImageError(
        f"Cannot read image {path}: {reason}. Replace or remove the file.", kind, reason
    )


def _read_into(out: torch.Tensor, path: Path, flip: bool, resize: str = "float") -> None:
    """Write the image at ``path`` into ``out`` (float [3,S,S]), resized to S if need be, flipped if asked."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r}; expected one of {RESIZE_MODES}.")
    size = out.shape[-1]
    pixels = _jpeg_bytes(path) if Path(path).suffix.lower() in JPEG_SUFFIXES else None
    if pixels is not None and pixels.shape[1:] == (size, size):  # the common case: bytes to floats, once
        out.copy_(pixels.flip(-1) if flip else pixels).div_(255.0)
        return
    if pixels is not None and resize == "pil":
        out.copy_(resize_like_pil(pixels.permute(1, 2, 0).numpy(), size, flip)).div_(255.0)
        return
    if pixels is not None:
        tensor = pixels.contiguous().float().div_(255.0)  # channels first as bytes, then floats
    else:
        try:
            with Image.open(path) as img:
                img.load()
                if resize == "pil" and img.mode not in (*WIDE_GRAY_MODES, "F"):
                    rgb = np.asarray(img.convert("RGB"))
                    out.copy_(resize_like_pil(rgb, size, flip)).div_(255.0)
                    return
                tensor = _rgb_pixels(img, path)
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            raise unreadable_image(path, err) from err
    if tensor.shape[1:] != (size, size):  # at the same size the resize is the identity, bit for bit
        tensor = F.interpolate(
            tensor[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0].clamp_(0.0, 1.0)  # rounded filter weights overshoot 1 by ~1e-7
    out.copy_(tensor.flip(-1) if flip else tensor)


def resize_like_pil(rgb: np.ndarray, size: int, flip: bool = False) -> torch.Tensor:
    """uint8 [H,W,3] -> uint8 [3,size,size] by PIL's bilinear resize (8-bit rounding after its horizontal
    and its vertical pass), flipped horizontally first if asked (the reference flips the files, then resizes).
    """
    if flip:
        rgb = rgb[:, ::-1]
    image = Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def _jpeg_bytes(path: Path) -> torch.Tensor | None:
    """uint8 [3,H,W] decoded by torchvision's libjpeg-turbo (channels first as a view of [H,W,3] memory),
    or None where it cannot (PIL then reads the file, or says why not).

    The same pixels as PIL's decoder, bit for bit (tested on 4:2:0, 4:2:2, 4:4:4, progressive, grayscale and
    CMYK files), in about 0.7x PIL's time.
    """
    try:
        return decode_jpeg(read_bytes(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError:
        return None


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
