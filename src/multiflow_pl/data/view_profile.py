"""What the training images of each view look like (size, channels), and checks of new images against it.

On an inspection line a camera that was moved, re-configured or swapped shows as a view whose images
have another size, aspect ratio or channel count than in training. Such images are still scored (they
are resized and converted to RGB as usual), but :func:`input_flags` names what differs, so that the
scores can be taken with care. Only image headers are read: cheap, no decoding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from multiflow_pl.data.errors import UnreadableImageError
from multiflow_pl.data.images import unreadable_image
from multiflow_pl.data.sample import MultiViewSample

PROFILE_SAMPLES = 64
"""Training samples (evenly spread) whose image headers make the profile."""
ASPECT_TOLERANCE = 0.01
"""Relative difference of width / height below which two aspect ratios count as equal."""
FLAG_KINDS = ("size", "aspect", "channels")


@dataclass(frozen=True)
class InputFlag:
    """One way a view's image differs from the training images of that view."""

    view: str
    kind: str  # one of FLAG_KINDS
    text: str


def image_header(path: Path) -> tuple[int, int, int]:
    """(width, height, channels) of an image file from its header; palette images count as colour."""
    try:
        with Image.open(path) as img:
            bands = len(img.getbands())
            channels = {"P": 3, "PA": 4}.get(img.mode, bands)
            return img.size[0], img.size[1], channels
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise unreadable_image(path, err) from err


def view_profile(samples: Sequence[MultiViewSample], limit: int = PROFILE_SAMPLES) -> dict[str, dict]:
    """Per view, the most common ``{"width", "height", "channels"}`` among up to ``limit`` samples."""
    if not samples:
        return {}
    step = max(1, len(samples) // limit)
    seen: dict[str, Counter] = {}
    for sample in samples[::step][:limit]:
        for view in sample.views:
            seen.setdefault(view.view, Counter())[image_header(view.image_path)] += 1
    profile = {}
    for name, counts in seen.items():
        width, height, channels = counts.most_common(1)[0][0]
        profile[name] = {"width": width, "height": height, "channels": channels}
    return profile


def input_flags(sample: MultiViewSample, profile: dict[str, dict]) -> list[InputFlag]:
    """How the views of ``sample`` differ from ``profile`` (see :func:`view_profile`); empty if not at all.

    A view of another aspect ratio is flagged ``aspect``; of the same aspect but another size ``size``;
    of another channel count (e.g. grayscale for colour) ``channels``. Views whose header cannot be read
    are left to the reading of the images, which reports them.
    """
    flags = []
    for view in sample.views:
        trained = profile.get(view.view)
        if trained is None:
            continue
        try:
            width, height, channels = image_header(view.image_path)
        except UnreadableImageError:
            continue
        want_w, want_h = trained["width"], trained["height"]
        if abs((width / height) / (want_w / want_h) - 1.0) > ASPECT_TOLERANCE:
            text = f"{width}x{height} (aspect {width / height:.2f}; trained {want_w}x{want_h})"
            flags.append(InputFlag(view.view, "aspect", text))
        elif (width, height) != (want_w, want_h):
            flags.append(InputFlag(view.view, "size", f"{width}x{height} (trained {want_w}x{want_h})"))
        if channels != trained["channels"]:
            text = f"{channels} channel(s) (trained {trained['channels']})"
            flags.append(InputFlag(view.view, "channels", text))
    return flags


def format_flags(flags: Sequence[InputFlag]) -> str:
    """``"C2 aspect 333x200 (...); C3 channels 1 channel(s) (...)"``, for tables and messages."""
    return "; ".join(f"{flag.view} {flag.kind} {flag.text}" for flag in flags)
