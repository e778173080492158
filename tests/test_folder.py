"""Tests of the reader for a user's own N-view rig laid out as folders, on tiny rigs in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from multiflow_pl.data.errors import DatasetError
from multiflow_pl.data.folder import IMAGE_EXTENSIONS, load_folder_samples, natural_key


@pytest.fixture
def make_rig(write_image: Callable[..., Path]) -> Callable[..., Path]:
    """``make_rig(root, files, masks={}) -> root``.

    ``files`` maps a sample folder relative to root (``"test/scratch/s1"``) to its file names (images,
    or text files for other suffixes);
    ``masks`` maps ``"<defect>/<sample>"`` to the views given a ``ground_truth`` mask.
    """

    def make(root: Path, files: dict[str, list[str]], masks: dict[str, list[str]] | None = None) -> Path:
        for folder, names in files.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            for name in names:
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    write_image(root / folder / name)
                else:
                    (root / folder / name).write_text("not an image")
        for folder, views in (masks or {}).items():
            for view in views:
                write_image(root / "ground_truth" / folder / f"{view}_mask.png")
        return root

    return make


def test_three_view_rig_with_mixed_extensions(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    files = {
        f"train/good/s{i}": ["C1.png", "C2.JPG", "C3.jpeg", "notes.txt", ".hidden.png"] for i in (10, 2, 1)
    }
    root = make_rig(tmp_path / "bracket", files)
    samples = load_folder_samples(root)
    assert [s.key for s in samples] == ["good_s1", "good_s2", "good_s10"]
    for sample in samples:
        assert sample.category == "bracket" and sample.label == 0
        assert sample.view_names == ("C1", "C2", "C3")
        assert [v.image_path.suffix for v in sample.views] == [".png", ".JPG", ".jpeg"]
        assert all(v.image_path.is_absolute() and v.image_path.is_file() for v in sample.views)
        assert all(v.mask_path is None and v.label == 0 and v.anomaly_class == "OK" for v in sample.views)
    assert load_folder_samples(root, category="bracket_v2")[0].category == "bracket_v2"


def test_seven_view_rig_order_follows_config(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    names = ["top", "side10", "side2", "side5", "side1", "side3", "side4"]
    root = make_rig(tmp_path, {"train/good/a": [f"{n}.bmp" for n in names]})
    (configured,) = load_folder_samples(root, views=names)
    assert configured.view_names == tuple(names)
    assert [v.image_path.stem for v in configured.views] == names
    (found,) = load_folder_samples(root)
    assert found.view_names == ("side1", "side2", "side3", "side4", "side5", "side10", "top")


def test_natural_sort_of_view_names(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"train/good/a": ["C10.tif", "C2.TIFF", "C1.png"]})
    assert load_folder_samples(root)[0].view_names == ("C1", "C2", "C10")
    assert sorted(["C10", "C2", "C1"], key=natural_key) == ["C1", "C2", "C10"]


def test_labels_with_and_without_ground_truth(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    views = ["C1.png", "C2.png", "C3.png"]
    files = {"test/good/s1": views, "test/scratch/s1": views, "test/scratch/s2": views, "test/dent/s3": views}
    root = make_rig(tmp_path, files, masks={"scratch/s1": ["C2"], "scratch/s2": []})
    (root / "ground_truth" / "scratch" / "s2").mkdir(parents=True)
    samples = {s.key: s for s in load_folder_samples(root, "test")}
    assert list(samples) == ["dent_s3", "good_s1", "scratch_s1", "scratch_s2"]
    assert samples["good_s1"].label == 0
    masked = samples["scratch_s1"]
    assert masked.label == 1 and [v.label for v in masked.views] == [0, 1, 0]
    assert [v.anomaly_class for v in masked.views] == ["OK", "scratch", "OK"]
    assert masked.views[1].mask_path == root / "ground_truth" / "scratch" / "s1" / "C2_mask.png"
    assert masked.views[0].mask_path is None
    assert samples["scratch_s2"].label == 0  # ground truth folder without masks: no view shows the defect
    unmasked = samples["dent_s3"]
    assert unmasked.label == 1 and all(v.label == 1 and v.mask_path is None for v in unmasked.views)
    assert {v.anomaly_class for v in unmasked.views} == {"dent"}


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no_rig does not exist"):
        load_folder_samples(tmp_path / "no_rig")


def test_bad_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Unknown split 'valid'"):
        load_folder_samples(tmp_path, "valid")


def test_missing_split_folder(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"train/good/a": ["C1.png"]})
    with pytest.raises(DatasetError, match=r"No class folders in .*test; expected .*test/good/<sample>"):
        load_folder_samples(root, "test")


def test_empty_class_folder(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"No sample folders in .*train"):
        load_folder_samples(tmp_path)


def test_defects_in_training_split(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"train/good/a": ["C1.png"], "train/scratch/b": ["C1.png"]})
    with pytest.raises(
        DatasetError, match="class folder\\(s\\) scratch, but training expects normal samples only"
    ):
        load_folder_samples(root)


def test_extra_view_not_in_config(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"train/good/a": ["C1.png", "C2.png", "C3.png"]})
    with pytest.raises(DatasetError, match=r"good/a has image\(s\) of view\(s\) C3 that are not among"):
        load_folder_samples(root, views=["C1", "C2"])


def test_missing_view_raises_naming_sample(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"train/good/a": ["C1.png", "C2.png", "C3.png"], "train/good/b": ["C1.png"]})
    with pytest.raises(
        DatasetError, match=r"'good_b' in .*train lacks view\(s\) C2, C3 .*drop_incomplete=True"
    ):
        load_folder_samples(root)
    with pytest.raises(DatasetError, match=r"'good_a' in .*train lacks view\(s\) C4"):
        load_folder_samples(root, views=["C1", "C2", "C3", "C4"], drop_incomplete=False)


def test_drop_incomplete_warns_and_drops(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"train/good/a": ["C1.png", "C2.png"], "train/good/b": ["C2.png"]})
    with pytest.warns(UserWarning, match=r"Dropped 1 of 2 samples .*good_b \(lacks C1\)"):
        samples = load_folder_samples(root, drop_incomplete=True)
    assert [s.key for s in samples] == ["good_a"]


def test_two_files_for_one_view(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"train/good/a": ["C1.png", "C1.jpg", "C2.png"]})
    with pytest.raises(DatasetError, match=r"Two images for view 'C1': .*a/C1\.jpg and .*a/C1\.png"):
        load_folder_samples(root)


def test_images_without_sample_folder(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"train/good": ["img_001.png"], "train/good/a": ["C1.png"]})
    with pytest.raises(DatasetError, match=r"Images directly in .*train/good \(img_001\.png\)"):
        load_folder_samples(root)


@pytest.mark.parametrize("views", [[], ["C1", "C2", "C1"]])
def test_bad_view_list(tmp_path: Path, make_rig: Callable[..., Path], views: list[str]) -> None:
    root = make_rig(tmp_path, {"train/good/a": ["C1.png", "C2.png"]})
    with pytest.raises(DatasetError, match=r"views must list each view name once"):
        load_folder_samples(root, views=views)


def test_mask_of_unknown_view(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"test/scratch/a": ["C1.png", "C2.png"]}, masks={"scratch/a": ["C3"]})
    with pytest.raises(DatasetError, match=r"Mask\(s\) .*scratch/a/C3_mask\.png match no view"):
        load_folder_samples(root, "test")


def test_sample_key_collision(tmp_path: Path, make_rig: Callable[..., Path]) -> None:
    root = make_rig(tmp_path, {"test/deep_scratch/1": ["C1.png"], "test/deep/scratch_1": ["C1.png"]})
    with pytest.raises(DatasetError, match=r"share the sample key 'deep_scratch_1'"):
        load_folder_samples(root, "test")
