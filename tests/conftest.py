"""Fixtures shared by the tests (their helpers live in tests/helpers/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.runs import TINY_TRAIN, TinyRun, compose_config, write_image_file


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of a trained model (the session's ``tiny_run``) are end-to-end: ``make test-fast`` skips them."""
    for item in items:
        if "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, size=8, seed=0) -> path``: a tiny random RGB image file."""
    return write_image_file


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """Train :data:`TINY_TRAIN` once per test session (about 10 s on two CPU cores)."""
    from multiflow_pl.train import train

    root = tmp_path_factory.mktemp("tiny_run")
    metrics = train(compose_config("train", root, TINY_TRAIN))
    return TinyRun(root, TINY_TRAIN, metrics)
