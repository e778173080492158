"""read_image: PIL's pixels over 255, channels first and contiguous, in every mode the datasets meet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from multiflow_pl.data.images import read_image

RNG = np.random.default_rng(0)
MODES = {
    "rgb.jpg": Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
    "rgba.png": Image.fromarray(RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)),
    "gray.png": Image.fromarray(RNG.integers(0, 256, (32, 32), dtype=np.uint8)),
    "palette.png": Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert("P"),
}


@pytest.mark.parametrize("name", sorted(MODES))
def test_same_size_image_is_pil_rgb_over_255_channels_first(tmp_path, name):
    path = tmp_path / name
    MODES[name].save(path)
    with Image.open(path) as image:
        expected = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    tensor = read_image(path, 32)
    assert tensor.dtype == torch.float32 and tensor.is_contiguous()
    assert torch.equal(tensor, expected.permute(2, 0, 1))
    assert torch.equal(read_image(path, 32, flip=True), tensor.flip(-1))


def test_sixteen_bit_gray_is_scaled_from_65535_and_repeated(tmp_path):
    values = np.array([[0, 257], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    tensor = read_image(tmp_path / "g16.png", 2)
    assert tensor.shape == (3, 2, 2) and tensor.is_contiguous()
    assert torch.equal(tensor[0], torch.from_numpy(values.astype(np.float32) / 65535.0))
    assert torch.equal(tensor[0], tensor[2])


def test_other_sizes_are_resized_and_stay_in_the_unit_range(tmp_path):
    Image.new("RGB", (40, 60), (255, 255, 255)).save(tmp_path / "white.png")
    for size in (7, 33, 100):  # the filter's weights sum to 1 + 4e-7 for some of these sizes
        tensor = read_image(tmp_path / "white.png", size)
        assert tensor.shape == (3, size, size)
        assert tensor.max() == 1.0 and tensor.min() > 0.999
