"""Samples that cannot be scored, as ``predict`` and ``inference`` report them.

A sample is invalid when an image of one of its views cannot be read (missing, empty, not an image,
truncated or otherwise damaged: :data:`~multiflow_pl.data.errors.UNREADABLE_KINDS`) or when its score is
not finite. It gets a row with decision ``INVALID``, its reason in ``input_flags`` and empty score cells
(a non-finite score is written as it is); the other samples are scored exactly as if it were absent, and
the command ends with exit status :data:`EXIT_INVALID_SAMPLES` once every output is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from multiflow_pl.data.errors import UNREADABLE_KINDS, summarize
from multiflow_pl.data.view_profile import InputFlag

INVALID = "INVALID"
"""The decision of a sample that could not be scored."""
EXIT_INVALID_SAMPLES = 3
"""Exit status of a run that wrote all its outputs but found invalid samples (2: a user error stopped it)."""


def unreadable_counts(unreadable: Mapping[str, Sequence[InputFlag]]) -> dict[str, int]:
    """Sample key -> flags of its unreadable views, as summary.json's ``unreadable``: the number of
    samples, and of unreadable views per kind."""
    counts = {"samples": len(unreadable)}
    for kind in UNREADABLE_KINDS:
        counts[kind] = sum(flag.kind == kind for flags in unreadable.values() for flag in flags)
    return counts


def invalid_message(reasons: Mapping[str, str], total: int) -> str:
    """One line naming the invalid samples (sample key -> why) among ``total``."""
    listing = summarize([f"{key} ({reason})" for key, reason in reasons.items()])
    return (
        f"{len(reasons)} of {total} samples are {INVALID} and have no score: {listing}. Replace the images "
        "that cannot be read and score those samples again."
    )
