"""Index of a user's own camera rig with any number of views, one folder per sample.

Pure Python, no torch. Layout under ``root``::

    train/good/<sample>/<view>.<ext>                  normal samples only
    test/good/<sample>/<view>.<ext>
    test/<defect>/<sample>/<view>.<ext>
    ground_truth/<defect>/<sample>/<view>_mask.png    optional

Views are named by file stem (``C1.png`` is view ``C1``); ``<ext>`` is one of :data:`IMAGE_EXTENSIONS`
in any case. Labels of a sample under ``test/<defect>/``:

* with a ``ground_truth/<defect>/<sample>/`` folder, a view is anomalous iff it has a mask there; the
  other views are labelled normal (``"OK"``), as the defect may be invisible from their cameras;
* without one, every view is labelled anomalous (class ``<defect>``) and has no mask, so pixel metrics
  cannot use the sample.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from multiflow_pl.data.errors import DatasetError, require_choice, select_complete, summarize
from multiflow_pl.data.sample import MultiViewSample, ViewRecord

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS: tuple[str, ...] = ("train", "test")
NORMAL_CLASS = "good"
GROUND_TRUTH = "ground_truth"
MASK_SUFFIX = "_mask.png"


def load_folder_samples(
    root: str | Path,
    split: str = "train",
    views: Sequence[str] | None = None,
    *,
    category: str | None = None,
    drop_incomplete: bool = False,
) -> list[MultiViewSample]:
    """Read the samples of one split, sorted by (class folder, sample name).

    Args:
        root: the rig's folder (see the module docstring for the layout).
        split: ``"train"`` or ``"test"``.
        views: the view names in the order to use; also the expected set (any other image in a
            sample folder is an error). ``None``: every view found in the split, naturally sorted.
        category: the samples' category; defaults to the name of ``root``.
        drop_incomplete: skip (with a warning) samples lacking a view instead of raising.

    Sample keys are ``<class folder>_<sample folder>``, e.g. ``scratch_007``.
    """
    require_choice("split", split, SPLITS)
    configured = _check_view_list(views)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(
            f"Folder dataset root {root} does not exist or is not a folder; fix the root path."
        )
    split_dir = root / split
    class_dirs = _subfolders(split_dir) if split_dir.is_dir() else []
    if not class_dirs:
        raise DatasetError(
            f"No class folders in {split_dir}; expected {split_dir}/{NORMAL_CLASS}/<sample>/<view>.<ext>."
        )
    defects = [d.name for d in class_dirs if d.name != NORMAL_CLASS]
    if split == "train" and defects:
        raise DatasetError(
            f"{split_dir} holds class folder(s) {', '.join(defects)}, but training expects normal samples "
            f"only: keep them under {split_dir / NORMAL_CLASS} and move defective samples to {root / 'test'}."
        )

    files_by_key: dict[str, dict[str, Path]] = {}
    folders_by_key: dict[str, tuple[str, str]] = {}
    for class_dir in class_dirs:
        _reject_loose_images(class_dir)
        for sample_dir in _subfolders(class_dir):
            key = f"{class_dir.name}_{sample_dir.name}"
            if key in files_by_key:
                other = split_dir.joinpath(*folders_by_key[key])
                raise DatasetError(
                    f"{sample_dir} and {other} share the sample key {key!r}; rename one of them."
                )
            files_by_key[key] = _view_files(sample_dir)
            folders_by_key[key] = (class_dir.name, sample_dir.name)
    if not files_by_key:
        raise DatasetError(f"No sample folders in {split_dir}; expected <class>/<sample>/<view>.<ext>.")

    if configured is None:
        expected = sorted({view for files in files_by_key.values() for view in files}, key=natural_key)
    else:
        expected = configured
        _reject_extra_views(files_by_key, folders_by_key, split_dir, expected)
    keys = select_complete(files_by_key, expected, source=str(split_dir), drop_incomplete=drop_incomplete)
    category = category or root.name
    samples = []
    for key in keys:
        class_name, sample_name = folders_by_key[key]
        gt_dir = root / GROUND_TRUTH / class_name / sample_name
        records = _label_views(class_name, files_by_key[key], expected, gt_dir)
        samples.append(MultiViewSample(key, category, max(v.label for v in records), records))
    return samples


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders digit runs by value: ``C2`` before ``C10``."""
    return [int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name))]


def _check_view_list(views: Sequence[str] | None) -> list[str] | None:
    if views is None:
        return None
    names = [str(view) for view in views]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if not names or duplicates:
        raise DatasetError(
            f"views must list each view name once, got {names}; "
            "give the file stems of the cameras in order, e.g. [C1, C2, C3], or None to use all found."
        )
    return names


def _subfolders(folder: Path) -> list[Path]:
    """Non-hidden subfolders, naturally sorted by name."""
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: natural_key(p.name))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _reject_loose_images(class_dir: Path) -> None:
    loose = sorted(p.name for p in class_dir.iterdir() if _is_image(p))
    if loose:
        raise DatasetError(
            f"Images directly in {class_dir} ({summarize(loose)}): each sample needs its own folder, "
            f"{class_dir}/<sample>/<view>.<ext>, holding one image per view."
        )


def _view_files(sample_dir: Path) -> dict[str, Path]:
    """Map view name (file stem) -> image path for one sample folder."""
    files: dict[str, Path] = {}
    for path in sorted(sample_dir.iterdir()):
        if not _is_image(path):
            continue
        if path.stem in files:
            raise DatasetError(
                f"Two images for view {path.stem!r}: {files[path.stem]} and {path}; keep only one of them."
            )
        files[path.stem] = path
    return files


def _reject_extra_views(
    files_by_key: dict[str, dict[str, Path]],
    folders_by_key: dict[str, tuple[str, str]],
    split_dir: Path,
    expected: list[str],
) -> None:
    for key, files in files_by_key.items():
        extra = [view for view in files if view not in expected]
        if extra:
            sample_dir = split_dir.joinpath(*folders_by_key[key])
            raise DatasetError(
                f"{sample_dir} has image(s) of view(s) {', '.join(extra)} that are not among the configured "
                f"views {expected}; add them to views or remove the files."
            )


def _label_views(
    class_name: str, files: dict[str, Path], order: list[str], gt_dir: Path
) -> tuple[ViewRecord, ...]:
    """The sample's view records in ``order``, labelled as described in the module docstring."""
    if class_name == NORMAL_CLASS:
        return tuple(ViewRecord(view, files[view], None, 0, "OK") for view in order)
    if not gt_dir.is_dir():
        return tuple(ViewRecord(view, files[view], None, 1, class_name) for view in order)
    masks = {
        p.name[: -len(MASK_SUFFIX)]: p
        for p in gt_dir.iterdir()
        if p.name.lower().endswith(MASK_SUFFIX) and p.is_file()
    }
    stray = sorted(str(masks[view]) for view in masks if view not in order)
    if stray:
        raise DatasetError(
            f"Mask(s) {summarize(stray)} match no view of the sample (views: {', '.join(order)}); "
            f"name masks <view>{MASK_SUFFIX} after the view's image stem."
        )
    return tuple(
        ViewRecord(
            view, files[view], masks.get(view), int(view in masks), class_name if view in masks else "OK"
        )
        for view in order
    )
