"""read_image: PIL's pixels over 255, channels first and contiguous, in every mode the datasets meet; JPEGs
decoded by torchvision give PIL's pixels bit for bit; unreadable files are errors that name them.
read_views: a sample's views in one tensor, each as read_image reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from multiflow_pl.data.errors import DatasetError, UnreadableImageError
from multiflow_pl.data.images import read_image, read_views

RNG = np.random.default_rng(0)
PHOTO = np.asarray(Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((32, 32)))
"""Smooth enough for JPEG's chroma subsampling to matter."""
MODES = {
    "rgb.jpg": Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
    "photo.jpg": Image.fromarray(PHOTO),
    "gray.jpg": Image.fromarray(PHOTO).convert("L"),
    "cmyk.jpg": Image.fromarray(PHOTO).convert("CMYK"),
    "rgba.png": Image.fromarray(RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)),
    "gray.png": Image.fromarray(RNG.integers(0, 256, (32, 32), dtype=np.uint8)),
    "palette.png": Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert("P"),
}


JPEG_OPTIONS = {"420": {"subsampling": 2}, "422": {"subsampling": 1}, "444": {"subsampling": 0}}
JPEG_OPTIONS |= {"progressive": {"progressive": True}, "q40": {"quality": 40}}


def pil_pixels(path) -> torch.Tensor:
    """The pixels as PIL decodes them: float32 [3,H,W] in [0,1]."""
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


@pytest.mark.parametrize("name", sorted(MODES))
def test_same_size_image_is_pil_rgb_over_255_channels_first(tmp_path, name):
    path = tmp_path / name
    MODES[name].save(path)
    tensor = read_image(path, 32)
    assert tensor.dtype == torch.float32 and tensor.is_contiguous()
    assert torch.equal(tensor, pil_pixels(path))
    assert torch.equal(read_image(path, 32, flip=True), tensor.flip(-1))


@pytest.mark.parametrize("kind", sorted(JPEG_OPTIONS))
def test_jpegs_decoded_by_torchvision_have_pils_pixels(tmp_path, monkeypatch, kind):
    from multiflow_pl.data import images

    path = tmp_path / f"{kind}.jpg"
    Image.fromarray(PHOTO).save(path, **JPEG_OPTIONS[kind])
    decoded = images._jpeg_bytes(path)
    assert decoded is not None and decoded.dtype == torch.uint8
    assert torch.equal(decoded.float() / 255.0, pil_pixels(path))
    assert torch.equal(read_image(path, 32), pil_pixels(path))
    monkeypatch.setattr(images, "decode_jpeg", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no")))
    assert images._jpeg_bytes(path) is None
    assert torch.equal(read_image(path, 32), pil_pixels(path))  # PIL read it instead


@pytest.mark.parametrize("content", [b"not an image", None])
def test_unreadable_jpeg_is_an_error_that_names_the_file(tmp_path, content):
    path = tmp_path / "C1.jpg"
    Image.fromarray(PHOTO).save(path)
    data = path.read_bytes()
    path.write_bytes(content if content is not None else data[: len(data) // 2])  # garbage, truncated
    with pytest.raises(DatasetError, match=r"Cannot read image .*C1\.jpg: .*Replace or remove the file"):
        read_image(path, 32)


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


def test_read_views_equals_each_view_read_alone(tmp_path):
    """JPEGs at the size (decoded straight into their slot, flipped or not) and views that take the other
    paths (PNG, resized JPEG) give read_image's tensors, stacked."""
    Image.fromarray(PHOTO).save(tmp_path / "C1.jpg")
    Image.fromarray(PHOTO).save(tmp_path / "C2.jpg", subsampling=0)
    MODES["rgba.png"].save(tmp_path / "C3.png")
    Image.fromarray(PHOTO).resize((48, 40)).save(tmp_path / "C4.jpg")
    paths = [tmp_path / name for name in ("C1.jpg", "C2.jpg", "C3.png", "C4.jpg", "C1.jpg")]
    flips = [False, True, True, False, True]
    views = read_views(paths, 32, flips)
    assert views.shape == (5, 3, 32, 32) and views.dtype == torch.float32 and views.is_contiguous()
    expected = torch.stack([read_image(path, 32, flip) for path, flip in zip(paths, flips, strict=True)])
    assert torch.equal(views, expected)
    assert torch.equal(views[0], pil_pixels(paths[0])) and torch.equal(views[4], views[0].flip(-1))
    (tmp_path / "C5.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"Cannot read image .*C5\.jpg"):
        read_views([*paths[:4], tmp_path / "C5.jpg"], 32, flips)


def test_read_views_records_every_unreadable_view_with_its_kind(tmp_path):
    """With ``failures``, each view that cannot be read is recorded (missing, empty, not an image, damaged)
    and the readable ones are still read; without, the first stops the sample."""
    Image.fromarray(PHOTO).save(tmp_path / "C1.jpg")
    data = (tmp_path / "C1.jpg").read_bytes()
    (tmp_path / "C2.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "C3.jpg").write_bytes(b"")
    (tmp_path / "C4.jpg").write_text("not an image")
    paths = [tmp_path / name for name in ("C1.jpg", "C2.jpg", "C3.jpg", "C4.jpg", "C5.png")]
    failures: dict = {}
    views = read_views(paths, 32, [False] * 5, failures=failures)
    assert torch.equal(views[0], read_image(paths[0], 32))
    assert {i: err.kind for i, err in failures.items()} == {
        1: "damaged",
        2: "empty",
        3: "not_image",
        4: "missing",
    }
    assert "runcated" in failures[1].reason and failures[4].reason == "no such file"  # PIL's words vary
    assert str(failures[2]) == f"Cannot read image {paths[2]}: 0-byte file. Replace or remove the file."
    with pytest.raises(UnreadableImageError, match=r"C2\.jpg: .*[Tt]runcated") as stopped:
        read_views(paths, 32, [False] * 5)
    assert stopped.value.kind == "damaged"


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random colour image (coarse noise upsampled), like a photograph's JPEG statistics."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


def reference_resize(path, size: int, flip: bool = False) -> torch.Tensor:
    """The paper's reference: the 8-bit RGB image resized by PIL's bilinear filter, then ToTensor."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if flip:
            rgb = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        resized = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))
    return torch.from_numpy(resized.astype(np.float32) / 255.0).permute(2, 0, 1)


# Real-IAD's image sizes: the square 1024/512/256 releases and raw camera frames (here a 2448x2048 frame)
@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (512, 512), (256, 256), (2448, 2048)])
def test_pil_resize_equals_pils_output_bit_for_bit(tmp_path, width, height):
    path = tmp_path / f"view_{width}x{height}.jpg"
    photo(width, height, seed=width).save(path, quality=92)
    for size in (768, 456, 256, 224):
        expected = reference_resize(path, size)
        assert torch.equal(read_image(path, size, resize="pil"), expected), size
        assert torch.equal(
            read_image(path, size, flip=True, resize="pil"), reference_resize(path, size, True)
        )
        views = read_views([path, path], size, [False, True], resize="pil")
        assert torch.equal(views[0], expected)
    assert not torch.equal(
        read_image(path, 768), reference_resize(path, 768)
    )  # the float resize is not PIL's


def test_pil_resize_of_other_formats_and_bad_mode(tmp_path):
    for name, image in (
        ("gray.png", photo(64, 48, 1).convert("L")),
        ("rgba.png", photo(64, 48, 2).convert("RGBA")),
    ):
        path = tmp_path / name
        image.save(path)
        assert torch.equal(read_image(path, 40, resize="pil"), reference_resize(path, 40))
    with pytest.raises(ValueError, match="resize='nearest'"):
        read_views([tmp_path / "gray.png"], 40, [False], resize="nearest")
