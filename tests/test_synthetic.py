"""The synthetic five-view benchmark: layout, labels and masks, determinism, laziness, read-back, plots."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from helpers.runs import run_cli
from PIL import Image

from multiflow_pl.data import synthetic
from multiflow_pl.data.errors import DatasetError
from multiflow_pl.data.realiad import load_samples
from multiflow_pl.data.sample import MultiViewSample, ViewRecord
from multiflow_pl.data.synthetic import CATEGORIES, DEFECT_TYPES, VARIANT_COLOURS, VIEW_NAMES, generate
from multiflow_pl.evaluation.plots import plot_sample_sheet, save_contact_sheet

KEY = re.compile(r"([a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z])_C[0-9]_")
SIZE, N_TRAIN, N_TEST = 96, 4, 16
SMALL = {"categories": ["knob"], "n_train": 2, "n_test": 8, "size": 64, "progress": False}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    return generate(root, n_train=N_TRAIN, n_test=N_TEST, size=SIZE, seed=3, progress=False)


def _entries(root: Path, category: str) -> dict:
    return json.loads((root / "realiad_jsons" / f"{category}.json").read_text())


def _samples(root: Path, category: str, split: str) -> dict[str, list[dict]]:
    """Sample key -> its JSON entries (read directly, independent of the project's reader)."""
    grouped = defaultdict(list)
    for entry in _entries(root, category)[split]:
        grouped[KEY.search(Path(entry["image_path"]).name).group(1)].append(entry)
    return grouped


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _variant_of(image: np.ndarray) -> int | None:
    """The variant whose body colour most object pixels match by chromaticity (None: too few match)."""
    rgb = image.reshape(-1, 3).astype(np.float64)
    bright = rgb.sum(axis=1) > 90  # object pixels: the dark table sums to about 80
    chroma = rgb[bright] / rgb[bright].sum(axis=1, keepdims=True)
    variants = VARIANT_COLOURS / VARIANT_COLOURS.sum(axis=1, keepdims=True)
    distance = np.linalg.norm(chroma[:, None, :] - variants[None], axis=2)
    votes = np.bincount(distance.argmin(axis=1)[distance.min(axis=1) < 0.1], minlength=len(variants))
    return int(votes.argmax()) if votes.max() >= 0.02 * len(rgb) else None


def test_layout_names_and_schema(bench: Path) -> None:
    assert sorted(p.name for p in (bench / "realiad_jsons").iterdir()) == sorted(
        f"{c}.json" for c in CATEGORIES
    )
    meta = json.loads((bench / "synthetic_meta.json").read_text())
    assert meta["settings"]["seed"] == 3 and meta["settings"]["size"] == SIZE
    for category in CATEGORIES:
        document = _entries(bench, category)
        assert document["meta"]["normal_class"] == "OK" and document["meta"]["prefix"] == ""
        pattern = re.compile(
            rf"^(OK|NG/(?P<code>[A-Z]+))/S(?P<folder>\d{{4}})/{category}_(?P<number>\d{{4}})_"
            r"(OK|NG_(?P=code))_C[1-5]_\d{14}\.jpg$"
        )
        for split in ("train", "test"):
            for entry in document[split]:
                assert set(entry) == {"category", "anomaly_class", "image_path", "mask_path"}
                assert entry["category"] == category
                match = pattern.match(entry["image_path"])
                assert match and match["folder"] == match["number"], entry["image_path"]
                assert (bench / f"realiad_{SIZE}" / category / entry["image_path"]).is_file()
            for key, views in _samples(bench, category, split).items():
                names = sorted(re.search(r"_(C\d)_", e["image_path"]).group(1) for e in views)
                assert names == list(VIEW_NAMES), key
        assert all(e["anomaly_class"] == "OK" for e in document["train"])
        assert len(_samples(bench, category, "train")) == N_TRAIN
        assert len(_samples(bench, category, "test")) == N_TEST


def test_sample_numbers_restart_in_every_folder(bench: Path) -> None:
    numbers = defaultdict(set)
    for split in ("train", "test"):
        for key in _samples(bench, "can", split):
            number, cls = re.match(r"can_(\d{4})_(.*)$", key).groups()
            numbers[cls].add(int(number))
    n_defective = N_TEST // 2
    assert numbers.pop("OK") == set(range(1, N_TRAIN + N_TEST - n_defective + 1))
    assert set(numbers) == {f"NG_{code}" for code in DEFECT_TYPES}
    for found in numbers.values():
        assert found == set(range(1, n_defective // len(DEFECT_TYPES) + 1))


def test_masks_agree_with_labels(bench: Path) -> None:
    for category in CATEGORIES:
        image_dir = bench / f"realiad_{SIZE}" / category
        for key, views in _samples(bench, category, "test").items():
            for entry in views:
                image_path = image_dir / entry["image_path"]
                png = image_path.with_suffix(".png")
                if entry["anomaly_class"] == "OK":
                    assert entry["mask_path"] is None and not png.exists(), key
                    continue
                assert entry["mask_path"] == str(Path(entry["image_path"]).with_suffix(".png"))
                mask = np.asarray(Image.open(image_dir / entry["mask_path"]))
                assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) == {0, 255}, key
                assert Image.open(image_path).size == (SIZE, SIZE)
            anomalous = any(e["anomaly_class"] != "OK" for e in views)
            assert anomalous == ("_NG_" in key), key
            assert {e["anomaly_class"] for e in views} <= {"OK", key.split("_")[-1]}


def test_defect_types_occur_and_local_defects_are_seen_by_some_views(bench: Path) -> None:
    seen = defaultdict(list)
    for category in CATEGORIES:
        for key, views in _samples(bench, category, "test").items():
            if "_NG_" in key:
                seen[key.split("_")[-1]].append([e["anomaly_class"] != "OK" for e in views])
    assert set(seen) == set(DEFECT_TYPES)
    for code in ("HS", "ZW", "QS"):
        assert all(sum(flags) >= 1 for flags in seen[code]), code
    surface = [sum(flags) for code in ("HS", "ZW") for flags in seen[code]]
    assert np.mean(np.array(surface) < len(VIEW_NAMES)) >= 0.5, surface
    for flags in seen["XV"]:
        assert sum(flags) == 1 and not flags[0], flags  # one side view, never the top view C1


def test_each_view_of_a_sample_shows_a_valid_variant_and_only_xv_mixes_them(bench: Path) -> None:
    checked = 0
    for category in CATEGORIES:
        image_dir = bench / f"realiad_{SIZE}" / category
        for key, views in _samples(bench, category, "test").items():
            if not (key.endswith("_OK") or key.endswith("_XV")):
                continue
            views = sorted(views, key=lambda e: e["image_path"])
            variants = [_variant_of(np.asarray(Image.open(image_dir / e["image_path"]))) for e in views]
            odd = [v for v, e in zip(variants, views, strict=True) if e["anomaly_class"] == "XV"]
            rest = {v for v, e in zip(variants, views, strict=True) if e["anomaly_class"] == "OK"}
            assert None not in variants and len(rest) == 1, (key, variants)
            assert len(odd) == int(key.endswith("_XV")) and rest.isdisjoint(odd), (key, variants)
            checked += 1
    assert checked == len(CATEGORIES) * (N_TEST - N_TEST // 2 + N_TEST // 2 // len(DEFECT_TYPES))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _file_hashes(generate(tmp_path / "a", seed=1, **SMALL))
    assert first == _file_hashes(generate(tmp_path / "b", seed=1, **SMALL))
    assert first != _file_hashes(generate(tmp_path / "c", seed=2, **SMALL))
    monkeypatch.setattr(synthetic.writer, "MIN_JOBS_PER_WORKER", 2)  # force the pool on this small set
    assert first == _file_hashes(generate(tmp_path / "d", seed=1, **{**SMALL, "workers": 2}))


def test_lazy_recall_keeps_files_and_other_settings_need_overwrite(tmp_path: Path) -> None:
    root = generate(tmp_path, **SMALL)
    stamps = {path: path.stat().st_mtime_ns for path in root.rglob("*")}
    start = time.perf_counter()
    assert generate(tmp_path, **SMALL) == root
    assert time.perf_counter() - start < 0.5
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*")} == stamps
    with pytest.raises(DatasetError, match="overwrite"):
        generate(tmp_path, **{**SMALL, "n_train": 3})
    generate(tmp_path, **{**SMALL, "n_train": 3, "size": 48}, overwrite=True)
    assert json.loads((root / "synthetic_meta.json").read_text())["settings"]["n_train"] == 3
    assert not (root / "realiad_64" / "knob").exists()
    assert len(_samples(root, "knob", "train")) == 3


def test_interrupted_run_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic.writer, "render_sample", fail)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    generate(tmp_path, **SMALL)
    assert (tmp_path / "synthetic_meta.json").is_file()


def test_foreign_files_and_bad_arguments_are_refused(tmp_path: Path) -> None:
    (tmp_path / "realiad_jsons").mkdir()
    (tmp_path / "realiad_jsons" / "knob.json").write_text("{}")
    with pytest.raises(DatasetError, match="not written by this generator"):
        generate(tmp_path, **SMALL)
    with pytest.raises(DatasetError, match="Unknown synthetic category"):
        generate(tmp_path, **{**SMALL, "categories": ["audiojack"]})


def test_load_samples_reads_the_benchmark_back(tmp_path: Path) -> None:
    root = generate(tmp_path, categories=["box"], n_train=2, n_test=8, size=256, progress=False)
    train = load_samples(root, "box", "train", resolution="256")
    assert len(train) == 2 and all(s.label == 0 and len(s.views) == 5 for s in train)
    test = load_samples(root, "box", "test", resolution="256")
    assert sorted(s.anomaly_class for s in test) == sorted(["OK"] * 4 + list(DEFECT_TYPES))
    for sample in test:
        assert sample.label == int(sample.key.split("_")[-1] != "OK")
        for view in sample.views:
            assert (view.mask_path is not None) == bool(view.label)
            if view.mask_path is not None:
                assert np.asarray(Image.open(view.mask_path)).max() == 255


def test_cli_writes_a_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--root", str(tmp_path), "--categories", "can", "--n-train", "1", "--n-test", "4", "--size", "48"]
    synthetic.main([*args, "--quiet", "--seed", "5"])
    assert "ready" in capsys.readouterr().out
    assert len(_samples(tmp_path, "can", "test")) == 4
    assert json.loads((tmp_path / "synthetic_meta.json").read_text())["settings"]["seed"] == 5


def test_unknown_class_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown anomaly class"):
        synthetic.render_sample("can", "AK", size=32)


def test_sample_sheet_uses_one_colour_scale_and_contact_sheet_is_saved(bench: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps = [rng.random((8, 8)) * scale for scale in (1.0, 2.0, 5.0)]
    figure = plot_sample_sheet([np.zeros((16, 16, 3))] * 3, ["C1", "C2", "C3"], maps=maps)
    limits = {image.get_clim() for ax in figure.axes for image in ax.images if image.get_array().ndim == 2}
    assert limits == {(min(m.min() for m in maps), max(m.max() for m in maps))}
    image_dir = bench / f"realiad_{SIZE}" / "can"
    samples = []
    for key, entries in list(_samples(bench, "can", "test").items())[:2]:
        views = tuple(
            ViewRecord(
                view=re.search(r"_(C\d)_", e["image_path"]).group(1),
                image_path=image_dir / e["image_path"],
                mask_path=image_dir / e["mask_path"] if e["mask_path"] else None,
                label=int(e["anomaly_class"] != "OK"),
                anomaly_class=e["anomaly_class"],
            )
            for e in sorted(entries, key=lambda e: e["image_path"])
        )
        samples.append(MultiViewSample(key, "can", max(v.label for v in views), views))
    path = save_contact_sheet(samples, tmp_path / "sheet.png", size=64)
    width, height = Image.open(path).size
    assert width > 5 * 64 and height > 2 * 64


def test_missing_categories_are_added_to_an_existing_benchmark(tmp_path):
    small = {**SMALL, "categories": ["knob"]}
    generate(tmp_path / "a", **small)
    knob = sorted((tmp_path / "a" / "realiad_64" / "knob").rglob("*.jpg"))
    stamp = knob[0].stat().st_mtime_ns
    generate(tmp_path / "a", **{**small, "categories": ["can"]})
    meta = json.loads((tmp_path / "a" / "synthetic_meta.json").read_text())
    assert meta["settings"]["categories"] == ["can", "knob"]
    assert knob[0].stat().st_mtime_ns == stamp  # knob left as it was
    generate(tmp_path / "b", **{**small, "categories": ["can", "knob"]})
    for category in ("can", "knob"):
        for path in sorted((tmp_path / "b" / "realiad_64" / category).rglob("*.*")):
            twin = tmp_path / "a" / path.relative_to(tmp_path / "b")
            assert path.read_bytes() == twin.read_bytes(), path
        assert (tmp_path / "a" / "realiad_jsons" / f"{category}.json").is_file()
    assert not list((tmp_path / "a").glob(".synthetic-*"))
    with pytest.raises(DatasetError, match="n_train=2 -> 3"):
        generate(tmp_path / "a", **{**small, "n_train": 3})


def test_realiad_shaped_flag_sets_realiad_counts_and_1024_px_jpegs(tmp_path: Path) -> None:
    from multiflow_pl.data.synthetic.cli import parse_args

    shaped = parse_args(["--realiad-shaped"])
    assert (shaped.n_train, shaped.n_test, shaped.size) == (240, 760, 1024)
    assert (parse_args([]).n_train, parse_args([]).size) == (48, 256)
    args = ["--categories", "box", "--realiad-shaped", "--n-train", "1", "--n-test", "2", "--quiet"]
    command = [sys.executable, "-m", "multiflow_pl.data.synthetic", "--root", str(tmp_path), *args]
    done = run_cli(None, tmp_path, command=command)
    assert done.returncode == 0, done.stderr
    samples = load_samples(tmp_path, "box", "test", resolution="1024")
    assert len(samples) == 2
    with Image.open(samples[0].views[0].image_path) as image:
        assert image.format == "JPEG" and image.size == (1024, 1024)
