"""Writing a ``.npy`` array block of rows by block of rows, with plain file writes.

Writing through a memory map (``np.lib.format.open_memmap``) leaves every written page mapped into the
process, so its resident set grows by the whole file: a Real-IAD-sized category's test features (1.3 GB)
added about that much to the feature extraction's peak RSS. Written with ``write``, the pages go to the
kernel's page cache only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def npy_rows(path: str | Path, dtype: np.dtype | type, shape: tuple[int, ...]) -> Iterator[Callable]:
    """An ``.npy`` file of ``shape`` and ``dtype`` at ``path``; the block yields ``write(block)``, which
    appends rows [n, *shape[1:]] (cast to ``dtype``). Leaving the block with rows missing raises ValueError.
    """
    dtype, shape = np.dtype(dtype), tuple(int(n) for n in shape)
    written = 0

    def write(block: np.ndarray) -> None:
        nonlocal written
        if tuple(block.shape[1:]) != shape[1:] or written + len(block) > shape[0]:
            raise ValueError(f"rows of shape {block.shape} do not fit {shape} after {written} rows")
        file.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
        written += len(block)

    with Path(path).open("wb") as file:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(file, header)
        yield write
    if written != shape[0]:
        raise ValueError(f"{written} of {shape[0]} rows written to {path}")
