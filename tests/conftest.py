"""Fixtures shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _write_image(path: Path, size: int = 8, seed: int = 0) -> Path:
    """Write a tiny random RGB image (format from the suffix: .jpg, .png, ...), creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, size=8, seed=0) -> path``: a tiny random RGB image file."""
    return _write_image
