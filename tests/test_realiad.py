"""Tests of the Real-IAD index reader on tiny datasets written in tmp_path with every layout quirk."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from multiflow_pl.data.errors import DatasetError
from multiflow_pl.data.realiad import (
    CATEGORIES,
    JSON_SETS,
    RESOLUTIONS,
    available_categories,
    load_samples,
)

VIEWS = ("C1", "C2", "C3", "C4", "C5")
CATEGORY = "audiojack"


def sample_entries(
    number: int,
    code: str = "OK",
    defect_views: tuple[str, ...] | None = None,
    views: tuple[str, ...] = VIEWS,
    separator: str = "_",
    category: str = CATEGORY,
) -> list[dict]:
    """JSON entries of one sample: normal for code "OK", else NG/<code> with masks on ``defect_views``."""
    normal = code == "OK"
    key = f"{category}{separator}{number:04d}_" + ("OK" if normal else f"NG_{code}")
    folder = f"OK/S{number:04d}" if normal else f"NG/{code}/S{number:04d}"
    defective = () if normal else (views if defect_views is None else defect_views)
    entries = []
    for view in views:
        stem = f"{folder}/{key}_{view}_20231023092610"
        bad = view in defective
        entries.append(
            {
                "category": category,
                "anomaly_class": code if bad else "OK",
                "image_path": f"{stem}.jpg",
                "mask_path": f"{stem}.png" if bad else None,
            }
        )
    return entries


def standard_test_entries() -> list[dict]:
    """A normal sample, a double-underscore NG sample visible from C1 and C3 only, a sample number > 1000."""
    return (
        sample_entries(3)
        + sample_entries(64, "HS", defect_views=("C1", "C3"), separator="__")
        + sample_entries(1203, "AK")
    )


@pytest.fixture
def make_realiad(write_image: Callable[..., Path]) -> Callable[..., Path]:
    """``make_realiad(root, train, test, ...) -> json path``: JSON (shuffled entries), images, masks."""

    def make(
        root: Path,
        train: list[dict],
        test: list[dict],
        *,
        category: str = CATEGORY,
        json_dir: str = "realiad_jsons",
        nested: bool = False,
        resolution: str = "256",
        meta: dict | None = None,
        write_files: bool = True,
        seed: int = 0,
    ) -> Path:
        rng = random.Random(seed)
        train, test = list(train), list(test)
        rng.shuffle(train)
        rng.shuffle(test)
        folder = root / json_dir / json_dir if nested else root / json_dir
        folder.mkdir(parents=True, exist_ok=True)
        document = {"meta": meta or {"prefix": "", "normal_class": "OK"}, "train": train, "test": test}
        json_path = folder / f"{category}.json"
        json_path.write_text(json.dumps(document))
        if write_files:
            image_dir = root / f"realiad_{resolution}" / category
            for entry in train + test:
                write_image(image_dir / entry["image_path"])
                if entry.get("mask_path"):
                    write_image(image_dir / entry["mask_path"])
        return json_path

    return make


@pytest.fixture
def standard(tmp_path: Path, make_realiad: Callable[..., Path]) -> Path:
    """Root of a dataset with two normal training samples and :func:`standard_test_entries`."""
    make_realiad(tmp_path, sample_entries(1) + sample_entries(2), standard_test_entries())
    return tmp_path


def by_key(samples: list) -> dict:
    return {sample.key: sample for sample in samples}


def test_constants() -> None:
    assert len(CATEGORIES) == len(set(CATEGORIES)) == 30
    assert {"audiojack", "transistor1", "zipper"} <= set(CATEGORIES)
    assert JSON_SETS[0] == "realiad_jsons" and "realiad_jsons_sv" in JSON_SETS and len(JSON_SETS) == 6
    assert RESOLUTIONS == ("256", "512", "1024", "raw")


def test_train_split_holds_normal_samples_with_absolute_paths(standard: Path) -> None:
    samples = load_samples(standard, CATEGORY, "train")
    assert [s.key for s in samples] == ["audiojack_0001_OK", "audiojack_0002_OK"]
    for sample in samples:
        assert sample.category == CATEGORY and sample.label == 0
        assert sample.view_names == VIEWS
        for view in sample.views:
            assert view.image_path.is_absolute() and view.image_path.is_file()
            assert view.image_path.name.startswith(f"{sample.key}_{view.view}_")
            assert view.mask_path is None and view.label == 0 and view.anomaly_class == "OK"


def test_test_split_labels_views_by_entry_not_by_path(standard: Path) -> None:
    samples = by_key(load_samples(standard, CATEGORY, "test"))
    assert (
        list(samples)
        == sorted(samples)
        == [
            "audiojack_0003_OK",
            "audiojack_1203_NG_AK",
            "audiojack__0064_NG_HS",
        ]
    )
    assert samples["audiojack_0003_OK"].label == 0
    partly = samples["audiojack__0064_NG_HS"]
    assert partly.label == 1 and partly.anomaly_class == "HS"
    assert [v.label for v in partly.views] == [1, 0, 1, 0, 0]
    hidden = partly.views[1]
    assert "/NG/HS/" in hidden.image_path.as_posix()
    assert hidden.anomaly_class == "OK" and hidden.mask_path is None
    visible = partly.views[0]
    assert (
        visible.mask_path is not None and visible.mask_path.suffix == ".png" and visible.mask_path.is_file()
    )
    assert all(v.label == 1 and v.mask_path for v in samples["audiojack_1203_NG_AK"].views)


def test_grouping_follows_file_names_not_json_order(
    tmp_path: Path, make_realiad: Callable[..., Path]
) -> None:
    def summary(root: Path) -> list:
        samples = load_samples(root, CATEGORY, "test")
        return [
            (s.key, s.label, [v.image_path.relative_to(root).as_posix() for v in s.views]) for s in samples
        ]

    json_path = make_realiad(tmp_path / "a", [], standard_test_entries(), seed=1)
    make_realiad(tmp_path / "b", [], standard_test_entries(), seed=2)
    listed = [entry["image_path"] for entry in json.loads(json_path.read_text())["test"]]
    assert listed != sorted(listed)
    assert summary(tmp_path / "a") == summary(tmp_path / "b")
    assert all(
        path.split("/")[-1].startswith(key) for key, _, paths in summary(tmp_path / "a") for path in paths
    )


@pytest.mark.parametrize("absolute", [False, True])
def test_json_one_level_deeper_and_absolute_json_dir(
    tmp_path: Path, make_realiad: Callable[..., Path], absolute: bool
) -> None:
    json_path = make_realiad(tmp_path, sample_entries(1), standard_test_entries(), nested=True)
    assert json_path.parent.name == json_path.parent.parent.name == "realiad_jsons"
    json_dir = tmp_path / "realiad_jsons" if absolute else "realiad_jsons"
    assert len(load_samples(tmp_path, CATEGORY, "test", json_dir=json_dir)) == 3
    assert available_categories(tmp_path, json_dir) == [CATEGORY]


@pytest.mark.parametrize("json_dir", JSON_SETS)
def test_every_json_set(tmp_path: Path, make_realiad: Callable[..., Path], json_dir: str) -> None:
    views = ("C1",) if json_dir.endswith("_sv") else VIEWS
    noisy_train = "fuiad" in json_dir
    train = sample_entries(1, views=views) + (sample_entries(7, "ZW", views=views) if noisy_train else [])
    make_realiad(tmp_path, train, sample_entries(2, "QS", views=views), json_dir=json_dir)
    samples = load_samples(tmp_path, CATEGORY, "train", json_dir=json_dir)
    assert all(s.view_names == views for s in samples)
    assert [s.label for s in samples] == ([0, 1] if noisy_train else [0])
    assert load_samples(tmp_path, CATEGORY, "test", json_dir=json_dir)[0].label == 1


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_every_resolution_folder(tmp_path: Path, make_realiad: Callable[..., Path], resolution: str) -> None:
    make_realiad(tmp_path, sample_entries(1), [], resolution=resolution)
    (sample,) = load_samples(tmp_path, CATEGORY, resolution=resolution)
    assert sample.views[0].image_path.parent.parent.parent == tmp_path / f"realiad_{resolution}" / CATEGORY


def test_integer_resolution_and_custom_category(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    make_realiad(tmp_path, sample_entries(1, category="widget"), [], category="widget")
    assert "widget" not in CATEGORIES
    (sample,) = load_samples(tmp_path, "widget", resolution=256)
    assert sample.key == "widget_0001_OK" and sample.category == "widget"


def test_normal_class_from_meta(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    entries = sample_entries(1)
    for entry in entries:
        entry["anomaly_class"] = "good"
    make_realiad(tmp_path, entries, [], meta={"normal_class": "good"})
    (sample,) = load_samples(tmp_path, CATEGORY)
    assert sample.label == 0 and {v.anomaly_class for v in sample.views} == {"good"}


def test_check_files_false_needs_no_images(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    make_realiad(tmp_path, [], standard_test_entries(), write_files=False)
    assert len(load_samples(tmp_path, CATEGORY, "test", check_files=False)) == 3


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no_such_root.*does not exist"):
        load_samples(tmp_path / "no_such_root", CATEGORY)


@pytest.mark.parametrize(("argument", "value"), [("split", "val"), ("resolution", "4k")])
def test_bad_split_or_resolution(standard: Path, argument: str, value: str) -> None:
    with pytest.raises(DatasetError, match=f"Unknown {argument} '{value}'"):
        load_samples(standard, CATEGORY, **{argument: value})


def test_missing_json_dir_says_where_it_looked(standard: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"realiad_jsons_fuiad_0\.3 does not exist.*looked for .*audiojack\.json"
    ):
        load_samples(standard, CATEGORY, json_dir="realiad_jsons_fuiad_0.3")


def test_unknown_category_lists_available(standard: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"Unknown category 'zipper'.*looked for .*zipper\.json.*: audiojack\."
    ):
        load_samples(standard, "zipper")


def test_malformed_json_names_file_and_position(standard: Path) -> None:
    (standard / "realiad_jsons" / "audiojack.json").write_text('{"train": [\n  {"image_path": }')
    with pytest.raises(DatasetError, match=r"Malformed JSON in .*audiojack\.json: .* line 2, column 18"):
        load_samples(standard, CATEGORY)


def test_json_without_test_key(tmp_path: Path) -> None:
    (tmp_path / "realiad_jsons").mkdir()
    (tmp_path / "realiad_jsons" / "audiojack.json").write_text(json.dumps({"meta": {}, "train": []}))
    with pytest.raises(DatasetError, match=r"audiojack\.json lacks the key\(s\) 'test'"):
        load_samples(tmp_path, CATEGORY)


def test_entry_without_field(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    entries = sample_entries(1)
    del entries[2]["mask_path"]
    make_realiad(tmp_path, entries, [])
    with pytest.raises(
        DatasetError,
        match=r"Entry \d in the train of .*audiojack\.json lacks the field\(s\) mask_path: .*_C3_",
    ):
        load_samples(tmp_path, CATEGORY)


def test_entry_with_wrong_field_type(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    entries = sample_entries(1)
    entries[0]["mask_path"] = 0
    make_realiad(tmp_path, entries, [], write_files=False)
    with pytest.raises(
        DatasetError, match=r"Entry \d in the train of .*audiojack\.json has a field of the wrong"
    ):
        load_samples(tmp_path, CATEGORY, check_files=False)


def test_file_name_without_sample_key(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    entries = sample_entries(1)
    entries[0]["image_path"] = "OK/S0001/photo_C1.jpg"
    make_realiad(tmp_path, entries, [], write_files=False)
    with pytest.raises(DatasetError, match=r"'photo_C1\.jpg'.*does not match"):
        load_samples(tmp_path, CATEGORY, check_files=False)


def test_duplicate_view_names_both_paths(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    entries = sample_entries(1)
    twin = dict(entries[3], image_path=entries[3]["image_path"].replace("20231023092610", "20231023099999"))
    make_realiad(tmp_path, [*entries, twin], [])
    pattern = r"'audiojack_0001_OK' has view C4 twice.*_C4_202310230(92610|99999)\.jpg and .*_C4_202310230"
    with pytest.raises(DatasetError, match=pattern):
        load_samples(tmp_path, CATEGORY, drop_incomplete=True)


def test_incomplete_sample_raises(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    incomplete = [e for e in sample_entries(2) if "_C3_" not in e["image_path"]]
    make_realiad(tmp_path, sample_entries(1) + incomplete, [])
    pattern = r"'audiojack_0002_OK' in .*audiojack\.json lacks view\(s\) C3 .*drop_incomplete=True"
    with pytest.raises(DatasetError, match=pattern):
        load_samples(tmp_path, CATEGORY)


def test_drop_incomplete_warns_and_drops(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    incomplete = [
        e for e in sample_entries(2) if "_C3_" not in e["image_path"] and "_C5_" not in e["image_path"]
    ]
    make_realiad(tmp_path, sample_entries(1) + incomplete + sample_entries(3), [])
    with pytest.warns(UserWarning, match=r"Dropped 1 of 3 samples .*audiojack_0002_OK \(lacks C3, C5\)"):
        samples = load_samples(tmp_path, CATEGORY, drop_incomplete=True)
    assert [s.key for s in samples] == ["audiojack_0001_OK", "audiojack_0003_OK"]


def test_missing_image_and_mask_files_in_one_error(standard: Path) -> None:
    image_dir = standard / "realiad_256" / CATEGORY
    image = next(image_dir.glob("OK/S0003/*_C2_*.jpg"))
    mask = next(image_dir.glob("NG/HS/S0064/*_C3_*.png"))
    image.unlink()
    mask.unlink()
    with pytest.raises(
        DatasetError, match=rf"2 of 22 files listed in .*audiojack\.json do not exist: .*{mask.name}"
    ):
        load_samples(standard, CATEGORY, "test")


def test_many_missing_files_are_summarised(tmp_path: Path, make_realiad: Callable[..., Path]) -> None:
    make_realiad(tmp_path, [], standard_test_entries(), write_files=False)
    (tmp_path / "realiad_256" / CATEGORY).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"22 of 22 files .* \.\.\. \(22 in total\)") as caught:
        load_samples(tmp_path, CATEGORY, "test")
    assert len(re.findall(r"\.(jpg|png)\b", str(caught.value))) == 5


def test_missing_resolution_folder_lists_the_present_ones(standard: Path) -> None:
    with pytest.raises(DatasetError, match=r"realiad_512/audiojack does not exist.*: realiad_256;"):
        load_samples(standard, CATEGORY, resolution="512")
