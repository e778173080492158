"""Automatic foreground masks: the frame's lower median as background, distances, pooling, dilation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multiflow_pl.data.foreground import auto_foreground


def reference_foreground(images: torch.Tensor, feature_size: tuple[int, int]) -> torch.Tensor:
    """The definition spelled out: torch.median of the 4-pixel frame, Euclidean RGB distance > 0.12,
    pooled cells with > 5 % foreground pixels, dilated by one cell."""
    b = 4
    strips = [images[..., :b, :], images[..., -b:, :], images[..., :, :b], images[..., :, -b:]]
    frame = torch.cat([strip.flatten(2) for strip in strips], dim=2)  # corners counted twice, as defined
    background = frame.median(dim=2).values[..., None, None]
    distance = (images - background).square().sum(dim=1, keepdim=True).sqrt()
    cells = F.adaptive_avg_pool2d((distance > 0.12).float(), feature_size) > 0.05
    return F.max_pool2d(cells.float(), kernel_size=3, stride=1, padding=1).squeeze(1)


def test_auto_foreground_equals_its_definition_and_leaves_the_images_alone():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 64, 48, generator=generator) * 0.1 + 0.4  # plain-ish backgrounds ...
    images[:, :, 20:40, 10:30] = torch.rand(6, 3, 20, 20, generator=generator)  # ... with an object
    images[1] = torch.rand(3, 64, 48, generator=generator)  # noise only: distances all around 0.12
    images[2] = 0.5  # no foreground at all
    before = images.clone()
    mask = auto_foreground(images, (8, 6))
    assert torch.equal(images, before)
    assert mask.shape == (6, 8, 6) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask, reference_foreground(images, (8, 6)))
    assert mask[2].sum() == 0 and mask[0].sum() > 0 and mask[0].sum() < mask[0].numel()


def test_auto_foreground_background_is_the_lower_median_of_an_even_frame():
    # a 16x16 image's frame holds 256 pixels per channel: 128 at 0.0 and 128 at 0.3; the lower median
    # is 0.0, so the 0.3 pixels are foreground (0.3 * sqrt(3) > 0.12) and the black ones are not
    image = torch.zeros(1, 3, 16, 16)
    image[..., :, 8:] = 0.3
    frame_left = auto_foreground(image, (2, 2))
    assert frame_left[0].tolist() == [[1.0, 1.0], [1.0, 1.0]]  # right half foreground, dilated over all
    assert torch.equal(frame_left, reference_foreground(image, (2, 2)))
    assert torch.equal(auto_foreground(image, (4, 4))[0, :, 0], torch.zeros(4))  # left edge stays background
