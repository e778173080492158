"""Reading rows of a memory-mapped feature cache without keeping its pages in the resident set."""

from pathlib import Path

import numpy as np
import torch

from multiflow_pl.data.dataset import CachedFeatureDataset
from multiflow_pl.data.memmap import read_row
from multiflow_pl.data.sample import MultiViewSample, ViewRecord


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_read_row_copies_the_row_and_releases_its_pages(tmp_path):
    rows = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=(40, 64, 1024))
    rows[:] = np.arange(40, dtype=np.float16)[:, None, None]
    rows.flush()
    del rows
    cache = np.load(tmp_path / "f.npy", mmap_mode="r")
    before = _rss_file_kib()
    for index in range(40):
        row = read_row(cache, index)
        assert row.dtype == np.float32 and row.shape == (64, 1024) and np.all(row == index)
    released = _rss_file_kib() - before
    for index in range(40):
        np.array(cache[index], dtype=np.float32)  # plain reads keep the 40 x 128 KiB mapped
    kept = _rss_file_kib() - before
    assert released < 1024 <= kept
    assert np.array_equal(read_row(np.arange(6.0).reshape(2, 3), 1), [3.0, 4.0, 5.0])  # plain arrays too


def test_cached_feature_dataset_reads_without_growing_the_resident_set(tmp_path):
    n, views = 24, 2
    features = np.lib.format.open_memmap(
        tmp_path / "features.npy", mode="w+", dtype=np.float16, shape=(n, views, 64, 32, 32)
    )
    features[:] = np.arange(n, dtype=np.float16)[:, None, None, None, None]
    foreground = np.lib.format.open_memmap(
        tmp_path / "foreground.npy", mode="w+", dtype=np.uint8, shape=(n, views, 32, 32)
    )
    foreground[:] = 1
    features.flush(), foreground.flush()
    del features, foreground
    samples = [
        MultiViewSample(
            f"s{i}",
            "sim",
            0,
            tuple(ViewRecord(f"C{v + 1}", Path(f"/x/{i}_{v}.jpg"), None, 0, "OK") for v in range(views)),
        )
        for i in range(n)
    ]
    dataset = CachedFeatureDataset(
        samples,
        np.load(tmp_path / "features.npy", mmap_mode="r"),
        np.load(tmp_path / "foreground.npy", mmap_mode="r"),
    )

    def read_and_check(index: int) -> None:
        item = dataset[index]
        assert item["features"].dtype == torch.float32 and torch.all(item["features"] == index)
        assert item["foreground"].shape == (views, 32, 32) and torch.all(item["foreground"] == 1)

    read_and_check(0)  # warm-up: maps the library code that a read and its checks run
    before = _rss_file_kib()
    for index in range(1, n):
        read_and_check(index)
    assert _rss_file_kib() - before < 1024  # the 23 x 256 KiB rows read were released again
