"""Progress display for long loops: a rich bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def is_interactive() -> bool:
    """Whether progress may be redrawn in place: standard output is a terminal (not a log, CI or SLURM)."""
    return sys.stdout.isatty()


def progress(iterable: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield from ``iterable`` while showing progress: a rich bar on a terminal, otherwise one log line per
    chunk of about 10% of ``total``."""
    if not enabled:
        yield from iterable
        return
    if is_interactive():
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(description, total=total)
            for item in iterable:
                yield item
                bar.advance(task)
        return
    step = max(1, total // 10)
    start = time.perf_counter()
    for done, item in enumerate(iterable, start=1):
        yield item
        if done % step == 0 or done == total:
            log.info("%s: %d/%d (%.1fs)", description, done, total, time.perf_counter() - start)
