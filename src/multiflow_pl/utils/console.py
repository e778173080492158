"""A quiet console: known, harmless third-party messages are dropped where they are emitted.

Each entry is a message we checked and found irrelevant to multiflow_pl runs; anything else still shows.
"""

from __future__ import annotations

import logging
import re
import warnings

KNOWN_WARNINGS = (
    # Lightning's pytree helper uses a torch API that torch deprecated; nothing for users to do.
    r".*isinstance\(treespec, LeafSpec\)",
    # The frozen backbone is in eval mode on purpose (frozen batch-norm statistics).
    r"Found \d+ module\(s\) in eval mode at the start of training",
)
"""Regular expressions of warnings (``warnings`` module) that are filtered."""
KNOWN_LOG_LINES = {
    # An advertisement for another logging service, printed by every Trainer.
    "lightning.pytorch.utilities.rank_zero": re.compile(r"💡 Tip: .*litlogger"),
}
"""Logger name -> pattern of its info lines that are dropped."""


class _DropMatching(logging.Filter):
    def __init__(self, pattern: re.Pattern) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_third_party() -> None:
    """Install the filters of :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_LINES` (idempotent)."""
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, pattern in KNOWN_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) and f.pattern is pattern for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))
