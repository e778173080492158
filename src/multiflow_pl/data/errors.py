"""The exception for data problems users can cause, and the checks shared by the dataset readers.

Every message names the offending file or value and says what to do about it.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence

MAX_LISTED = 5
"""How many offending items a message lists before summarising the rest as a count."""


UNREADABLE_KINDS = ("missing", "empty", "not_image", "damaged")
"""Why an image file cannot be read: no such file, zero bytes, not an image format, or a decoding error
(a truncated or corrupted image)."""


class DatasetError(ValueError):
    """A problem with the data on disk or with the arguments naming it (missing file, bad JSON, ...)."""


class UnreadableImageError(DatasetError):
    """An image file that cannot be read: ``kind`` (one of :data:`UNREADABLE_KINDS`) and a short ``reason``.

    Built from the message alone (as DataLoader workers rebuild errors) it is a plain ``damaged`` error.
    """

    def __init__(self, message: str, kind: str = "damaged", reason: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason or message


def summarize(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``"a, b, c"``, or the first ``limit`` items followed by ``"... (N in total)"``."""
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])}, ... ({len(items)} in total)"


def require_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise a :class:`DatasetError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise DatasetError(f"Unknown {name} {value!r}: choose one of {', '.join(map(repr, choices))}.")


def select_complete(
    views_by_key: Mapping[str, Collection[str]],
    expected: Sequence[str],
    *,
    source: str,
    drop_incomplete: bool,
) -> list[str]:
    """Return the sample keys (in input order) that have every view in ``expected``.

    A sample lacking a view raises a :class:`DatasetError` naming the sample, the missing views and
    ``source`` (the file or folder the samples came from); with ``drop_incomplete`` such samples are
    left out instead, with one warning summarising them.
    """
    lacking = {key: [v for v in expected if v not in views] for key, views in views_by_key.items()}
    incomplete = {key: missing for key, missing in lacking.items() if missing}
    if not incomplete:
        return list(views_by_key)
    listing = summarize([f"{key} (lacks {', '.join(missing)})" for key, missing in incomplete.items()])
    counts = f"{len(incomplete)} of {len(views_by_key)} samples"
    if not drop_incomplete:
        key, missing = next(iter(incomplete.items()))
        raise DatasetError(
            f"Sample '{key}' in {source} lacks view(s) {', '.join(missing)} "
            f"(expected views: {', '.join(expected)}); {counts} are incomplete: {listing}. "
            "Complete the data, or pass drop_incomplete=True to skip incomplete samples."
        )
    warnings.warn(
        f"Dropped {counts} in {source} that lack some of the views {', '.join(expected)}: {listing}.",
        stacklevel=3,
    )
    return [key for key in views_by_key if key not in incomplete]
