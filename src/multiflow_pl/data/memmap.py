"""Reading rows of memory-mapped arrays without keeping their pages resident."""

from __future__ import annotations

import mmap

import numpy as np


def read_row(array: np.ndarray, index: int, dtype: type = np.float32) -> np.ndarray:
    """``array[index]`` copied out as ``dtype``, without leaving the row's pages mapped.

    Pages of a memory-mapped file stay mapped into the process once read, and count in its resident set,
    so one pass over a cache larger than memory would show an RSS as large as the file. For an
    ``np.memmap`` (what :meth:`FeatureCache.load_or_build` returns) the row's pages are released again
    (``madvise(MADV_DONTNEED)``: they stay in the kernel's page cache, a later read maps them back).
    """
    row = np.array(array[index], dtype=dtype)
    mapping = getattr(array, "_mmap", None)
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED") or not array.flags.c_contiguous:
        return row
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    start = array.ctypes.data - base + index * array.strides[0]
    first = start - start % mmap.PAGESIZE
    last = min(len(mapping), -(-(start + array.strides[0]) // mmap.PAGESIZE) * mmap.PAGESIZE)
    mapping.madvise(mmap.MADV_DONTNEED, first, last - first)
    return row
