"""Turning errors that users cause into one clear message instead of a traceback."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from multiflow_pl.data.errors import DatasetError
from multiflow_pl.models.backbone import BackboneWeightsError
from multiflow_pl.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)
USER_ERRORS = (DatasetError, BackboneWeightsError, CheckpointError, FloatingPointError, FileNotFoundError)
EXIT_USER_ERROR = 2
"""Exit status of a run stopped by a user error (as argparse and Hydra use for bad command lines)."""
WORKER_WRAPPED = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\n")
"""How torch starts the message of an error raised again from a DataLoader worker."""
DEBUG_VARIABLES = ("HYDRA_FULL_ERROR", "MULTIFLOW_DEBUG")
"""Set either to 1 to get the full traceback instead of the one-line message."""


def find_user_error(err: BaseException) -> BaseException | None:
    """The user error behind ``err``, following the cause chain (Hydra's ``instantiate`` wraps what a
    constructor raised in an ``InstantiationException``), or None when there is none."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, USER_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def user_message(err: BaseException) -> str:
    """The message of a user error. A DataLoader worker's error is raised again in the main process with
    the worker's traceback as its message (``Caught X in DataLoader worker process N. Original Traceback
    ...``): its message is the traceback's last line, after the error's name."""
    text = str(err)
    if not WORKER_WRAPPED.match(text):
        return text
    return text.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]


def show_tracebacks() -> bool:
    """Whether ``HYDRA_FULL_ERROR=1`` or ``MULTIFLOW_DEBUG=1`` asks for full tracebacks."""
    return any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_VARIABLES)


@contextmanager
def user_errors() -> Iterator[None]:
    """Stop on errors users can fix with one ``error: ...`` line on stderr and exit status 2.

    The line is printed once; the job's log file (Hydra's ``<task>.log``) records it too. Other errors,
    and every error under ``HYDRA_FULL_ERROR=1`` or ``MULTIFLOW_DEBUG=1``, propagate with their traceback.
    """
    try:
        yield
    except Exception as err:
        cause = find_user_error(err)
        if cause is None or show_tracebacks():
            raise
        message = f"error: {user_message(cause)}"
        _log_to_files(message)
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None


def _log_to_files(message: str) -> None:
    """Write ``message`` to the log files of the root logger only (the console gets it once, from us)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@contextmanager
def discard_failed_run(run_dir: str | Path) -> Iterator[None]:
    """On any error, remove ``run_dir`` when it holds nothing but what Hydra wrote for this job
    (``.hydra/`` and ``*.log``), so a failed command leaves no run folder behind; a folder holding
    anything else (earlier outputs) is kept."""
    try:
        yield
    except BaseException:
        folder = Path(run_dir)
        bookkeeping = (
            all(p.name == ".hydra" or p.suffix == ".log" for p in folder.glob("*"))
            if folder.is_dir()
            else False
        )
        if bookkeeping:
            shutil.rmtree(folder, ignore_errors=True)
        raise
