"""Turning errors that users cause into one clear message instead of a traceback."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from multiflow_pl.data.errors import DatasetError
from multiflow_pl.models.backbone import BackboneWeightsError
from multiflow_pl.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)
USER_ERRORS = (DatasetError, BackboneWeightsError, CheckpointError, FloatingPointError, FileNotFoundError)


@contextmanager
def user_errors() -> Iterator[None]:
    """Exit with the error's message (status 1) for errors users can fix; MULTIFLOW_DEBUG=1 re-raises."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("MULTIFLOW_DEBUG"):
            raise
        log.error("%s", err)
        raise SystemExit(f"error: {err}") from None
