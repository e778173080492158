"""The benchmark on disk in Real-IAD layout: the sample plan, images, masks and meta JSONs, rendered into a
staging folder and moved into place; a root made with the same settings gains missing categories."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from multiflow_pl.data.errors import DatasetError, require_choice
from multiflow_pl.data.synthetic.catalogue import CATEGORIES, DEFECT_TYPES, VARIANT_COLOURS
from multiflow_pl.data.synthetic.imaging import VIEW_NAMES
from multiflow_pl.data.synthetic.render import render_sample
from multiflow_pl.utils.progress import progress as progress_iter

GENERATOR = "multiflow_pl.data.synthetic"
GENERATOR_VERSION = 2
META_FILE = "synthetic_meta.json"
JSON_DIR = "realiad_jsons"
JPEG_QUALITY = 92
MIN_JOBS_PER_WORKER = 16  # samples; below twice this, generation stays in the calling process


@dataclass(frozen=True)
class PlannedSample:
    """One sample to write: split, class (``"OK"`` or a defect code) and number within its folder."""

    split: str
    anomaly_class: str
    number: int

    @property
    def folder(self) -> str:
        """Folder relative to the category folder, e.g. ``OK/S0001`` or ``NG/HS/S0001``."""
        group = "OK" if self.anomaly_class == "OK" else f"NG/{self.anomaly_class}"
        return f"{group}/S{self.number:04d}"

    @property
    def tag(self) -> str:
        """The class part of the file names: ``OK`` or ``NG_<code>``."""
        return "OK" if self.anomaly_class == "OK" else f"NG_{self.anomaly_class}"


def plan_samples(n_train: int, n_test: int) -> list[PlannedSample]:
    """The samples of one category: ``n_train`` normal training samples; ``n_test`` test samples, half of
    them (rounded down) defective and spread evenly over :data:`DEFECT_TYPES`, the rest normal.

    Numbers restart in every folder, as in Real-IAD: normal test samples continue after the training ones
    in ``OK/``, and each ``NG/<code>/`` folder starts at 1.
    """
    n_defective = n_test // 2
    plan = [PlannedSample("train", "OK", number) for number in range(1, n_train + 1)]
    plan += [PlannedSample("test", "OK", n_train + number) for number in range(1, n_test - n_defective + 1)]
    for index, code in enumerate(DEFECT_TYPES):
        count = n_defective // len(DEFECT_TYPES) + int(index < n_defective % len(DEFECT_TYPES))
        plan += [PlannedSample("test", code, number) for number in range(1, count + 1)]
    return plan


def _sample_rng(seed: int, category: str, sample: PlannedSample) -> np.random.Generator:
    """A generator of its own per sample, so a sample does not depend on which others are generated."""
    return np.random.default_rng(
        [seed, zlib.crc32(category.encode()), zlib.crc32(sample.anomaly_class.encode()), sample.number]
    )


def _timestamp(seed: int, sequence: int, view_index: int) -> str:
    """A 14-digit capture time derived from the seed and the sample's position (no clock involved)."""
    start = datetime(2024, 1, 1, 8, 0, 0) + timedelta(days=seed % 366)
    return (start + timedelta(seconds=20 * sequence + 3 * view_index)).strftime("%Y%m%d%H%M%S")


@dataclass(frozen=True)
class SampleJob:
    """Render one planned sample and write its files under ``category_dir`` (picklable for workers)."""

    category_dir: Path
    category: str
    sample: PlannedSample
    sequence: int
    size: int
    seed: int

    def run(self) -> list[dict]:
        """Write the images (and the masks of anomalous views); return the sample's JSON entries."""
        sample, category = self.sample, self.category
        views = render_sample(
            category, sample.anomaly_class, self.size, _sample_rng(self.seed, category, sample)
        )
        (self.category_dir / sample.folder).mkdir(parents=True, exist_ok=True)
        entries = []
        for index, (view_name, view) in enumerate(zip(VIEW_NAMES, views, strict=True)):
            timestamp = _timestamp(self.seed, self.sequence, index)
            stem = f"{sample.folder}/{category}_{sample.number:04d}_{sample.tag}_{view_name}_{timestamp}"
            Image.fromarray(view.image).save(
                self.category_dir / f"{stem}.jpg", format="JPEG", quality=JPEG_QUALITY, subsampling=2
            )
            mask_path = None
            if view.mask is not None:
                mask_path = f"{stem}.png"
                Image.fromarray(view.mask.astype(np.uint8) * 255).save(
                    self.category_dir / mask_path, format="PNG"
                )
            entries.append(
                {
                    "category": category,
                    "anomaly_class": view.anomaly_class,
                    "image_path": f"{stem}.jpg",
                    "mask_path": mask_path,
                }
            )
        return entries


def _run_job(job: SampleJob) -> list[dict]:
    return job.run()


def _run_jobs(jobs: list[SampleJob], workers: int, progress: bool) -> list[list[dict]]:
    """Run the jobs in order, in ``workers`` processes when there are enough jobs to be worth it."""
    description = "Rendering the synthetic benchmark"
    if workers <= 1 or len(jobs) < MIN_JOBS_PER_WORKER * 2:
        return list(progress_iter(map(_run_job, jobs), len(jobs), description, progress))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pool.map(_run_job, jobs, chunksize=max(1, MIN_JOBS_PER_WORKER // 4))
        return list(progress_iter(results, len(jobs), description, progress))


def _settings(categories: Sequence[str], n_train: int, n_test: int, size: int, seed: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "categories": list(categories),
        "n_train": n_train,
        "n_test": n_test,
        "size": size,
        "seed": seed,
    }


def _outputs(root: Path, settings: dict) -> list[Path]:
    """The category image folders and meta JSONs a run with ``settings`` writes (the meta file aside)."""
    return [path for c in settings["categories"] for path in _category_outputs(root, c, settings["size"])]


def _category_outputs(root: Path, category: str, size: int) -> list[Path]:
    """The image folder and meta JSON of one category."""
    return [root / f"realiad_{size}" / category, root / JSON_DIR / f"{category}.json"]


def _differ_in_categories_only(previous: dict, settings: dict) -> bool:
    """Whether two settings describe the same benchmark up to the set of categories."""
    return {k: v for k, v in previous.items() if k != "categories"} == {
        k: v for k, v in settings.items() if k != "categories"
    }


def _read_settings(root: Path) -> dict | None:
    meta_path = root / META_FILE
    if not meta_path.is_file():
        return None
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DatasetError(
            f"{meta_path} is not a synthetic-benchmark meta file ({error}); remove it."
        ) from error


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _check_arguments(categories: Sequence[str], n_train: int, n_test: int, size: int) -> None:
    for category in categories:
        require_choice("synthetic category", category, CATEGORIES)
    if len(set(categories)) != len(categories) or not categories:
        raise DatasetError(f"categories={list(categories)}: give each category once, and at least one.")
    if n_train < 1 or n_test < 0 or n_train + n_test > 9999:
        raise DatasetError(
            f"n_train={n_train}, n_test={n_test}: need n_train >= 1, n_test >= 0 and at most 9999 samples."
        )
    if size < 32:
        raise DatasetError(f"size={size}: images must be at least 32 pixels wide.")


def generate(
    root: str | Path,
    categories: Sequence[str] | None = None,
    n_train: int = 48,
    n_test: int = 48,
    size: int = 256,
    seed: int = 0,
    *,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Write the synthetic benchmark under ``root`` in Real-IAD layout and return ``root``.

    Writes ``realiad_<size>/<category>/{OK,NG/<code>}/S<nnnn>/*.jpg|png``, ``realiad_jsons/<category>.json``
    and, last, ``synthetic_meta.json`` with the settings. Everything is rendered into a temporary folder
    under ``root`` first, so an interrupted run never looks complete.

    Args:
        root: dataset root (created when missing).
        categories: subset of :data:`CATEGORIES` (default: all).
        n_train: normal training samples per category.
        n_test: test samples per category (see :func:`plan_samples`).
        size: image side in pixels.
        seed: random seed; the same arguments give the same bytes.
        overwrite: replace a benchmark written with other settings (otherwise that is an error).
        progress: show progress.
        workers: rendering processes; more pay off for large sets on idle machines (sets of fewer than
            ``2 * MIN_JOBS_PER_WORKER`` samples stay in this process). The output does not depend on it.

    A complete benchmark with the same settings is left as it is (so callers may call this lazily). A
    benchmark made with the same settings but other categories gains the missing ones (a sample's bytes do
    not depend on which others are generated).
    """
    root = Path(root).expanduser().resolve()
    categories = tuple(CATEGORIES if categories is None else categories)
    _check_arguments(categories, n_train, n_test, size)
    settings = _settings(categories, n_train, n_test, size, seed)
    previous = _read_settings(root)
    if previous is not None and _differ_in_categories_only(previous, settings):
        present = [
            c for c in previous["categories"] if all(p.exists() for p in _category_outputs(root, c, size))
        ]
        categories = tuple(c for c in categories if c not in present)
        if not categories:
            return root
        union = [c for c in CATEGORIES if c in present or c in categories]
        previous = settings = _settings(union, n_train, n_test, size, seed)
    elif previous is not None and not overwrite:
        changed = ", ".join(
            f"{k}={previous.get(k)!r} -> {v!r}" for k, v in settings.items() if previous.get(k) != v
        )
        raise DatasetError(
            f"{root} holds a synthetic benchmark made with other settings ({changed}). Pass overwrite=True "
            "(CLI: --overwrite) to replace it, or choose another root."
        )
    ours = _outputs(root, previous) if previous is not None else []
    written = [path for category in categories for path in _category_outputs(root, category, size)]
    foreign = [path for path in written if path.exists() and path not in ours]
    if foreign and not overwrite:
        raise DatasetError(
            f"{foreign[0]} already exists and was not written by this generator with known settings. "
            "Pass overwrite=True (CLI: --overwrite) to replace it, or choose another root."
        )

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    try:
        jobs = [
            SampleJob(staging / f"realiad_{size}" / category, category, sample, sequence, size, seed)
            for category in categories
            for sequence, sample in enumerate(plan_samples(n_train, n_test))
        ]
        entries: dict[str, dict[str, list[dict]]] = {c: {"train": [], "test": []} for c in categories}
        for job, job_entries in zip(jobs, _run_jobs(jobs, workers, progress), strict=True):
            entries[job.category][job.sample.split] += job_entries
        (staging / JSON_DIR).mkdir()
        for category in categories:
            meta = {"prefix": "", "normal_class": "OK", "generator": GENERATOR, "seed": seed, "size": size}
            document = {"meta": meta, **entries[category]}
            (staging / JSON_DIR / f"{category}.json").write_text(
                json.dumps(document, indent=1), encoding="utf-8"
            )
        _publish(staging, root, settings, written, ours)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _publish(
    staging: Path, root: Path, settings: dict, targets: list[Path], previous_outputs: list[Path]
) -> None:
    """Move the staged ``targets`` into place, removing ``previous_outputs`` that ``settings`` no longer
    name; the meta file (``settings``) is written last."""
    (root / META_FILE).unlink(missing_ok=True)
    kept = set(_outputs(root, settings)) - set(targets)
    for path in {*previous_outputs, *targets} - kept:
        _remove(path)
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        (staging / target.relative_to(root)).rename(target)
    plan = plan_samples(settings["n_train"], settings["n_test"])
    meta = {
        "generator": GENERATOR,
        "settings": settings,
        "views": list(VIEW_NAMES),
        "defect_types": DEFECT_TYPES,
        "variant_colours": np.round(VARIANT_COLOURS.astype(float), 3).tolist(),
        "samples_per_category": {
            "train": sum(s.split == "train" for s in plan),
            "test": {
                code: sum(s.split == "test" and s.anomaly_class == code for s in plan)
                for code in ("OK", *DEFECT_TYPES)
            },
        },
    }
    partial = root / f"{META_FILE}.partial"
    partial.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    partial.replace(root / META_FILE)
