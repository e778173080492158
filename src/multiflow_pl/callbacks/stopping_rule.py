"""When to stop training: patience on a smoothed validation NLL, between a floor and a cap in steps.

Pure and deterministic (no Lightning, no clock): the same sequence of (step, NLL) checks gives the same
decisions. :class:`~multiflow_pl.callbacks.early_stopping.ValidationNLLStopping` feeds it during training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Check:
    """One validation check as the rule saw it.

    Attributes:
        step: optimizer steps done.
        value: the validation NLL.
        smoothed: its exponential moving average over the checks so far.
        best: the lowest smoothed value that counted as an improvement, up to this check.
        stale: checks since the last improvement (0: this one improved).
        stop: why training stops here: ``"cap"``, ``"plateau"``, or ``""`` (it goes on).
    """

    step: int
    value: float
    smoothed: float
    best: float
    stale: int
    stop: str


class StoppingRule:
    """Stop when the smoothed validation NLL has not improved for ``patience`` checks, not before
    ``min_steps`` (the floor), and at ``max_steps`` (the cap) at the latest.

    The smoothed value is ``s_t = smoothing * s_{t-1} + (1 - smoothing) * value_t`` (``s_1 = value_1``); a
    check improves when ``s_t < best - min_delta``.

    Args:
        min_steps: no stop on a plateau before this many steps.
        max_steps: stop at the first check at or after this many steps, even below the floor; -1 or None:
            no cap.
        patience: checks without improvement that make a plateau (at least 1).
        min_delta: how much lower than the best the smoothed NLL must be to count as an improvement.
        smoothing: weight of the past in the moving average, in [0, 1) (0: the raw values).
    """

    def __init__(
        self,
        min_steps: int,
        max_steps: int | None,
        patience: int,
        min_delta: float = 0.0,
        smoothing: float = 0.0,
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1 check, got {patience}.")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}.")
        if min_delta < 0:
            raise ValueError(f"min_delta must not be negative, got {min_delta}.")
        self.min_steps, self.patience = min_steps, patience
        self.max_steps = None if max_steps is None or max_steps < 0 else max_steps
        self.min_delta, self.smoothing = min_delta, smoothing
        self.checks: list[Check] = []

    def update(self, step: int, value: float) -> Check:
        """Take the validation NLL ``value`` after ``step`` optimizer steps; returns the check, whose
        ``stop`` says whether (and why) training stops now."""
        if not math.isfinite(value):
            raise ValueError(f"Validation NLL at step {step} is {value}; the rule needs finite values.")
        last = self.checks[-1] if self.checks else None
        if last is not None and step <= last.step:
            raise ValueError(f"Checks must come in increasing steps: {step} after {last.step}.")
        if last is None:
            smoothed, best, stale = value, value, 0
        else:
            smoothed = self.smoothing * last.smoothed + (1.0 - self.smoothing) * value
            improved = smoothed < last.best - self.min_delta
            best, stale = (smoothed, 0) if improved else (last.best, last.stale + 1)
        stop = ""
        if self.max_steps is not None and step >= self.max_steps:
            stop = "cap"
        elif step >= self.min_steps and stale >= self.patience:
            stop = "plateau"
        check = Check(step, float(value), float(smoothed), float(best), stale, stop)
        self.checks.append(check)
        return check

    def state_dict(self) -> dict:
        """The checks so far (for a resumed run)."""
        return {"checks": [asdict(check) for check in self.checks]}

    def load_state_dict(self, state: dict) -> None:
        self.checks = [Check(**check) for check in state.get("checks", [])]
