"""Progress display: a bar on a terminal, log lines (never carriage returns) otherwise."""

from __future__ import annotations

import logging

import pytest
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from multiflow_pl.callbacks import progress as progress_callbacks
from multiflow_pl.callbacks.progress import LogLineProgress, make_progress_bar
from multiflow_pl.utils import progress


@pytest.mark.parametrize(("interactive", "expected"), [(True, RichProgressBar), (False, LogLineProgress)])
def test_auto_is_a_bar_on_a_terminal_and_log_lines_otherwise(monkeypatch, interactive, expected):
    monkeypatch.setattr(progress_callbacks, "is_interactive", lambda: interactive)
    assert type(make_progress_bar("auto")) is expected
    assert (
        type(make_progress_bar("tqdm")) is TQDMProgressBar
        and type(make_progress_bar("log")) is LogLineProgress
    )
    with pytest.raises(ValueError, match="expected one of auto, rich, tqdm, log"):
        make_progress_bar("bar")


def test_loops_outside_a_terminal_log_one_line_per_tenth(monkeypatch, caplog, capsys):
    monkeypatch.setattr(progress, "is_interactive", lambda: False)
    with caplog.at_level(logging.INFO, logger=progress.__name__):
        assert list(progress.progress(range(25), 25, "Extracting")) == list(range(25))
    lines = [record.getMessage() for record in caplog.records]
    assert (
        len(lines) == 13
        and lines[0].startswith("Extracting: 2/25")
        and lines[-1].startswith("Extracting: 25/25")
    )
    assert "\r" not in capsys.readouterr().err
