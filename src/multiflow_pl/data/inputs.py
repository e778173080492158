"""The samples behind one path given to ``multiflow_pl.predict``, whatever its layout.

Pure Python, no torch. A path is, checked in this order:

* a ``.json`` file: a Real-IAD meta JSON (its ``split`` is read; the dataset root is found from the
  JSON's place, ``<root>/<json_dir>/<category>.json`` or one folder deeper);
* a folder holding images: one sample, views named by file stem (``C1.png`` is view ``C1``);
* a Real-IAD (or synthetic benchmark) root: it holds ``json_dir`` or ``realiad_<resolution>/``;
* an own-rig root: it holds ``<split>/<class>/<sample>/<view>.<ext>`` (see :mod:`.folder`);
* a folder of sample folders, each holding one image per view.

Samples from the first kinds of dataset carry their labels; single samples and folders of samples
are unlabelled (label 0, class ``"unknown"``).

With ``allow_missing_views`` a sample folder that lacks a view's image is still indexed, the view's image
path being where the image would be (``<folder>/<view>``, no such file): reading it then reports the view
as ``missing``, as for any image file that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from multiflow_pl.data.errors import DatasetError
from multiflow_pl.data.folder import IMAGE_EXTENSIONS, load_folder_samples, natural_key
from multiflow_pl.data.realiad import load_samples
from multiflow_pl.data.sample import MultiViewSample, ViewRecord

UNKNOWN_CLASS = "unknown"


@dataclass(frozen=True)
class FoundSamples:
    """What a path holds: the samples, the layout recognised and whether labels are known."""

    samples: list[MultiViewSample]
    layout: str  # "realiad_json", "sample", "realiad", "folder", "samples"
    labelled: bool


def find_samples(
    path: str | Path,
    view_names: Sequence[str] | None,
    *,
    category: str,
    split: str = "test",
    json_dir: str = "realiad_jsons",
    resolution: str = "256",
    root: str | Path | None = None,
    allow_missing_views: bool = False,
) -> FoundSamples:
    """Recognise the layout of ``path`` and read its samples.

    Args:
        path: see the module docstring.
        view_names: the views the model was trained on, in order (None: take the files' views, sorted).
        category: category of Real-IAD roots and of unlabelled samples.
        split: split of dataset roots and JSON files.
        json_dir, resolution: Real-IAD reader options (see :func:`.realiad.load_samples`).
        root: Real-IAD JSON only: the dataset root, when it is not where the JSON lies.
        allow_missing_views: sample folders only: index samples lacking views (see the module docstring)
            instead of stopping at the first.
    """
    path = Path(path).expanduser().resolve()
    if path.is_file() and path.suffix.lower() == ".json":
        json_folder = path.parent
        if root is None:
            nested = json_folder.parent.name == json_folder.name
            root = json_folder.parent.parent if nested else json_folder.parent
        samples = load_samples(root, path.stem, split, json_folder, resolution)
        return FoundSamples(samples, "realiad_json", True)
    if not path.is_dir():
        raise DatasetError(
            f"Input {path} is neither a folder nor a Real-IAD .json file; pass a sample folder, a folder of "
            "samples, a dataset root or a meta JSON."
        )
    if _images_in(path):
        sample = read_sample_folder(path, view_names, category, allow_missing_views)
        return FoundSamples([sample], "sample", False)
    if (path / json_dir).is_dir() or any(
        p.is_dir() and p.name.startswith("realiad_") for p in path.iterdir()
    ):
        return FoundSamples(load_samples(path, category, split, json_dir, resolution), "realiad", True)
    if (path / split).is_dir():
        samples = load_folder_samples(path, split, view_names, category=category)
        return FoundSamples(samples, "folder", True)
    sample_dirs = sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )
    samples = [
        read_sample_folder(d, view_names, category, allow_missing_views) for d in sample_dirs if _images_in(d)
    ]
    if not samples:
        raise DatasetError(
            f"Found no images in {path} or its subfolders: expected <sample>/<view>.<ext> with one of "
            f"{', '.join(IMAGE_EXTENSIONS)}, a dataset root (with {json_dir}/ or {split}/) or a meta JSON."
        )
    return FoundSamples(samples, "samples", False)


def read_sample_folder(
    folder: Path, view_names: Sequence[str] | None, category: str, allow_missing: bool = False
) -> MultiViewSample:
    """One unlabelled sample: the images ``<view>.<ext>`` in ``folder``, in ``view_names`` order.

    Missing views (unless ``allow_missing``: their paths are ``<folder>/<view>``, which do not exist), views
    the model does not know and two images of one view are errors naming the folder.
    """
    files: dict[str, Path] = {}
    for image in _images_in(folder):
        if image.stem in files:
            raise DatasetError(
                f"Two images for view {image.stem!r}: {files[image.stem]} and {image}; keep only one of them."
            )
        files[image.stem] = image
    expected = list(view_names) if view_names else sorted(files, key=natural_key)
    missing = [view for view in expected if view not in files]
    if missing and not allow_missing:
        raise DatasetError(
            f"Sample {folder} lacks view(s) {', '.join(missing)}: the model expects one image per view "
            f"{', '.join(expected)}, named <view>.<ext>. Add the missing images."
        )
    extra = [files[view].name for view in files if view not in expected]
    if extra:
        raise DatasetError(
            f"Sample {folder} has image(s) {', '.join(extra)} of views the model was not trained on "
            f"(its views: {', '.join(expected)}). Remove or rename them."
        )
    views = tuple(
        ViewRecord(view, files.get(view, folder / view), None, 0, UNKNOWN_CLASS) for view in expected
    )
    return MultiViewSample(folder.name, category, 0, views)


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
