"""What every entry point does around its task: a quiet console, user errors as one line, W&B closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from multiflow_pl.errors import discard_failed_run, user_errors
from multiflow_pl.utils.console import quiet_third_party
from multiflow_pl.utils.loggers import finish_wandb


@contextmanager
def entry_point(discard_on_failure: str | Path | None = None) -> Iterator[None]:
    """Run an entry point's task: known third-party noise filtered, user errors as one ``error:`` line
    (exit status 2), an open W&B run finished before the process exits, and, with
    ``discard_on_failure=RUN_DIR``, a run folder holding only Hydra's bookkeeping removed on failure."""
    quiet_third_party()
    with user_errors(), ExitStack() as stack:
        stack.callback(finish_wandb)
        if discard_on_failure is not None:
            stack.enter_context(discard_failed_run(discard_on_failure))
        yield
