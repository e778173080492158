"""Writing files and folders so that readers never see them half-written.

A file is written under a temporary name next to its final one (same file system) and renamed onto it
only when complete; on any error the temporary file is removed and an existing file keeps its content.
A set of files is written into a staging folder and moved into place at the end (:func:`staged_folder`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed onto ``path`` when the block succeeds.

    The temporary name keeps the suffix (``.x.tmp-<pid>.npy``), for writers that care about it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextmanager
def staged_folder(folder: Path, last: str | None = None) -> Iterator[Path]:
    """A private folder to write outputs into; they replace same-named entries of ``folder`` only when
    the block succeeds, ``last`` (e.g. ``"summary.json"``) moved last so that its presence means the
    others are complete. On any error the staging folder is removed and ``folder`` is left as it was."""
    folder.mkdir(parents=True, exist_ok=True)
    stage = folder / f".stage-{os.getpid()}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for item in sorted(stage.iterdir(), key=lambda p: p.name == last):
        target = folder / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    stage.rmdir()
