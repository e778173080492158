"""Progress display for long loops: a rich bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def progress(iterable: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield from ``iterable`` while showing progress (rich on a TTY, a log line every ~10% otherwise)."""
    if not enabled:
        yield from iterable
        return
    if sys.stderr.isatty():
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
