"""Index of Real-IAD (and of the synthetic benchmark written in its layout): meta JSON -> samples.

Pure Python, no torch. Layout under ``root``::

    realiad_<resolution>/<category>/<image_path or mask_path from the JSON>
    <json_dir>/<category>.json   or, after unzipping, <json_dir>/<json_dir name>/<category>.json

Views are grouped into samples by the key in their file names (:data:`SAMPLE_KEY_PATTERN`), never by
JSON order, and labelled by their JSON entries, never by their paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from multiflow_pl.data.errors import DatasetError, require_choice, select_complete, summarize
from multiflow_pl.data.sample import MultiViewSample, ViewRecord

CATEGORIES: tuple[str, ...] = (
    "audiojack",
    "bottle_cap",
    "button_battery",
    "end_cap",
    "eraser",
    "fire_hood",
    "mint",
    "mounts",
    "pcb",
    "phone_battery",
    "plastic_nut",
    "plastic_plug",
    "porcelain_doll",
    "regulator",
    "rolled_strip_base",
    "sim_card_set",
    "switch",
    "tape",
    "terminalblock",
    "toothbrush",
    "toy",
    "toy_brick",
    "transistor1",
    "u_block",
    "usb",
    "usb_adaptor",
    "vcpill",
    "wooden_beads",
    "woodstick",
    "zipper",
)
"""The 30 Real-IAD categories (for sweeps; :func:`load_samples` accepts any category with a JSON)."""

JSON_SETS: tuple[str, ...] = (
    "realiad_jsons",
    "realiad_jsons_sv",
    "realiad_jsons_fuiad_0.0",
    "realiad_jsons_fuiad_0.1",
    "realiad_jsons_fuiad_0.2",
    "realiad_jsons_fuiad_0.4",
)
RESOLUTIONS: tuple[str, ...] = ("256", "512", "1024", "raw")
SPLITS: tuple[str, ...] = ("train", "test")
ENTRY_FIELDS: tuple[str, ...] = ("anomaly_class", "image_path", "mask_path")
SAMPLE_KEY_PATTERN = re.compile(r"([a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z])_C([0-9])_")
"""Group 1: the sample key (e.g. ``audiojack__0064_NG_HS``); group 2: the camera digit."""


def load_samples(
    root: str | Path,
    category: str,
    split: str = "train",
    json_dir: str | Path = "realiad_jsons",
    resolution: str | int = "256",
    *,
    drop_incomplete: bool = False,
    check_files: bool = True,
) -> list[MultiViewSample]:
    """Read the samples of one category and split, sorted by key, views sorted by camera.

    Args:
        root: folder holding ``realiad_<resolution>/`` and the JSON folders.
        category: a category with a ``<category>.json`` in ``json_dir``.
        split: ``"train"`` or ``"test"``.
        json_dir: one of :data:`JSON_SETS` (or any name) under ``root``, or an absolute path.
        resolution: one of :data:`RESOLUTIONS` (or another pixel size, for synthetic sets); picks the
            image folder ``realiad_<resolution>``.
        drop_incomplete: skip (with a warning) samples lacking a view instead of raising.
        check_files: check that every image and mask listed exists.

    The expected views are all views seen in the split (C1..C5, or C1 alone for ``realiad_jsons_sv``).
    """
    require_choice("split", split, SPLITS)
    resolution = str(resolution)
    if not resolution.isdigit():  # Real-IAD ships RESOLUTIONS; a synthetic set may use any pixel size
        require_choice("resolution", resolution, RESOLUTIONS)
    root = _existing_root(root)
    json_path = find_json(root, category, json_dir)
    entries, normal_class = _read_split(json_path, split)
    image_dir = root / f"realiad_{resolution}" / category
    views_by_key = _group_views(entries, normal_class, image_dir, f"{split} of {json_path}")
    expected = sorted({view for views in views_by_key.values() for view in views})
    keys = select_complete(views_by_key, expected, source=str(json_path), drop_incomplete=drop_incomplete)
    samples = []
    for key in sorted(keys):
        views = tuple(views_by_key[key][view] for view in expected)
        samples.append(MultiViewSample(key, category, max(v.label for v in views), views))
    if check_files:
        _check_files(samples, image_dir, json_path)
    return samples


def available_categories(root: str | Path, json_dir: str | Path = "realiad_jsons") -> list[str]:
    """The categories with a ``<category>.json`` in ``json_dir`` (either location), sorted."""
    json_root = _json_root(Path(root).expanduser().resolve(), json_dir)
    folders = (json_root, json_root / json_root.name)
    return sorted({path.stem for folder in folders if folder.is_dir() for path in folder.glob("*.json")})


def find_json(root: str | Path, category: str, json_dir: str | Path = "realiad_jsons") -> Path:
    """The meta JSON of ``category``: ``<json_dir>/<category>.json`` or one folder deeper."""
    json_root = _json_root(Path(root).expanduser().resolve(), json_dir)
    candidates = (json_root / f"{category}.json", json_root / json_root.name / f"{category}.json")
    for path in candidates:
        if path.is_file():
            return path
    looked = f"looked for {candidates[0]} and {candidates[1]}"
    if not json_root.is_dir():
        raise DatasetError(
            f"JSON folder {json_root} does not exist ({looked}). Pass json_dir as one of "
            f"{', '.join(JSON_SETS)} (a folder under root) or as an absolute path."
        )
    available = available_categories(root, json_dir)
    listing = ", ".join(available) if available else "none (the folder holds no <category>.json)"
    raise DatasetError(f"Unknown category {category!r} ({looked}). Categories in {json_root}: {listing}.")


def _existing_root(root: str | Path) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DatasetError(
            f"Dataset root {path} does not exist or is not a folder. Point root at the folder that holds "
            f"realiad_<resolution>/ and the JSON folders ({', '.join(JSON_SETS)})."
        )
    return path


def _json_root(root: Path, json_dir: str | Path) -> Path:
    json_dir = Path(json_dir).expanduser()
    return json_dir if json_dir.is_absolute() else root / json_dir


def _read_split(json_path: Path, split: str) -> tuple[list[Any], str]:
    """The entries of ``split`` and the meta's normal class (default ``"OK"``)."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"Malformed JSON in {json_path}: {error.msg} at line {error.lineno}, column {error.colno}. "
            "Replace the file with the one from the dataset archive."
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(
            f"Cannot read {json_path}: {error}. Check the file and its permissions."
        ) from error
    missing = [name for name in SPLITS if not isinstance(data, dict) or name not in data]
    if missing:
        raise DatasetError(
            f"{json_path} lacks the key(s) {', '.join(map(repr, missing))}; a Real-IAD meta JSON is an "
            'object {"meta": {...}, "train": [...], "test": [...]}.'
        )
    if not isinstance(data[split], list):
        raise DatasetError(
            f"{json_path}: {split!r} must be a list of entries, got {type(data[split]).__name__}."
        )
    meta = data.get("meta") or {}
    normal_class = meta.get("normal_class", "OK") if isinstance(meta, dict) else "OK"
    return data[split], normal_class


def _entry_fields(entry: Any, index: int, source: str) -> tuple[str, str, str | None]:
    """``(image_path, anomaly_class, mask_path)`` of one entry, checked for presence and type."""
    if not isinstance(entry, dict):
        raise DatasetError(f"Entry {index} in the {source} is not an object with fields {ENTRY_FIELDS}.")
    missing = [name for name in ENTRY_FIELDS if name not in entry]
    if missing:
        raise DatasetError(f"Entry {index} in the {source} lacks the field(s) {', '.join(missing)}: {entry}.")
    image_path, anomaly_class, mask_path = entry["image_path"], entry["anomaly_class"], entry["mask_path"]
    valid_types = isinstance(image_path, str) and isinstance(anomaly_class, str) and image_path
    if not (valid_types and (mask_path is None or isinstance(mask_path, str))):
        raise DatasetError(
            f"Entry {index} in the {source} has a field of the wrong type: {entry}. image_path and "
            "anomaly_class must be strings, mask_path a string or null."
        )
    return image_path, anomaly_class, mask_path


def _group_views(
    entries: list[Any], normal_class: str, image_dir: Path, source: str
) -> dict[str, dict[str, ViewRecord]]:
    """Map sample key -> view name -> record, in one pass over the entries."""
    views_by_key: dict[str, dict[str, ViewRecord]] = {}
    for index, entry in enumerate(entries):
        image_path, anomaly_class, mask_path = _entry_fields(entry, index, source)
        name = image_path.rsplit("/", 1)[-1]
        match = SAMPLE_KEY_PATTERN.search(name)
        if match is None:
            raise DatasetError(
                f"File name {name!r} (entry {index} in the {source}) does not match the Real-IAD pattern "
                "<category>_<4-digit number>_<class>_C<camera>_<...>, so its sample is unknown. "
                "Rename the file and its image_path accordingly."
            )
        key, view = match.group(1), f"C{match.group(2)}"
        record = ViewRecord(
            view=view,
            image_path=image_dir / image_path,
            mask_path=None if mask_path is None else image_dir / mask_path,
            label=int(anomaly_class != normal_class),
            anomaly_class=anomaly_class,
        )
        views = views_by_key.setdefault(key, {})
        if view in views:
            raise DatasetError(
                f"Sample {key!r} has view {view} twice in the {source}: {views[view].image_path} and "
                f"{record.image_path}. Remove the duplicate entry."
            )
        views[view] = record
    return views_by_key


def _check_files(samples: list[MultiViewSample], image_dir: Path, json_path: Path) -> None:
    """Raise one :class:`DatasetError` listing the images and masks that do not exist."""
    if not image_dir.is_dir():
        root = image_dir.parent.parent
        found = [f"realiad_{r}" for r in RESOLUTIONS if (root / f"realiad_{r}" / image_dir.name).is_dir()]
        raise DatasetError(
            f"Image folder {image_dir} does not exist. Image folders of this category under {root}: "
            f"{', '.join(found) or 'none'}; pick the matching resolution, or fetch that one."
        )
    listed = [path for s in samples for v in s.views for path in (v.image_path, v.mask_path) if path]
    missing = [str(path) for path in listed if not path.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(listed)} files listed in {json_path} do not exist: "
            f"{summarize(missing)}. "
            "Re-extract the dataset, or pass check_files=False to skip this check."
        )
