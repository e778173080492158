"""npy_rows: an .npy file written block by block reads back as the array; short or misshapen rows stop it."""

from __future__ import annotations

import numpy as np
import pytest

from multiflow_pl.data.npy_rows import npy_rows


def test_blocks_read_back_as_one_array(tmp_path):
    data = np.random.default_rng(0).standard_normal((7, 3, 4)).astype(np.float32)
    path = tmp_path / "a.npy"
    with npy_rows(path, np.float16, data.shape) as write:
        for start in range(0, 7, 3):
            write(data[start : start + 3])
    back = np.load(path, mmap_mode="r")
    assert back.dtype == np.float16 and back.shape == (7, 3, 4)
    assert np.array_equal(back, data.astype(np.float16))


def test_missing_or_misshapen_rows_are_refused(tmp_path):
    with (
        pytest.raises(ValueError, match="2 of 3 rows written"),
        npy_rows(tmp_path / "b.npy", np.uint8, (3, 2)) as write,
    ):
        write(np.zeros((2, 2)))
    with (
        pytest.raises(ValueError, match="do not fit"),
        npy_rows(tmp_path / "c.npy", np.uint8, (3, 2)) as write,
    ):
        write(np.zeros((2, 5)))
