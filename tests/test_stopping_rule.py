"""The stopping rule on scripted validation-NLL curves: floor, cap, patience, improvement, smoothing."""

import math

import pytest

from multiflow_pl.callbacks.stopping_rule import StoppingRule


def run(rule: StoppingRule, values: list[float], every: int = 10) -> tuple[int | None, str]:
    """Feed ``values`` as checks every ``every`` steps; returns the (step, reason) of the stop, or None."""
    for n, value in enumerate(values, start=1):
        check = rule.update(n * every, value)
        if check.stop:
            return check.step, check.stop
    return None, ""


FALLING_THEN_FLAT = [5.0, 4.0, 3.0, 2.9, 2.95, 2.92, 2.93, 2.94, 2.91, 2.96]


def test_plateau_stops_after_patience_checks_without_improvement():
    rule = StoppingRule(min_steps=0, max_steps=None, patience=3)
    # best 2.9 at step 40; 2.95, 2.92, 2.93 do not beat it: stop at the third of them
    assert run(rule, FALLING_THEN_FLAT) == (70, "plateau")
    assert [c.stale for c in rule.checks] == [0, 0, 0, 0, 1, 2, 3]


def test_improvement_resets_patience():
    rule = StoppingRule(min_steps=0, max_steps=None, patience=3)
    assert run(rule, [5.0, 4.0, 4.5, 4.6, 3.0, 3.5, 3.6, 3.7]) == (80, "plateau")
    assert [c.best for c in rule.checks] == [5.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0]


def test_floor_holds_a_plateau_until_min_steps():
    rule = StoppingRule(min_steps=100, max_steps=None, patience=3)
    assert run(rule, [*FALLING_THEN_FLAT, 2.97, 2.98]) == (100, "plateau")
    rule = StoppingRule(min_steps=100, max_steps=None, patience=3)
    assert run(rule, [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]) == (None, "")


def test_cap_stops_even_while_improving():
    rule = StoppingRule(min_steps=10, max_steps=45, patience=2)
    assert run(rule, [5.0, 4.0, 3.0, 2.0, 1.0, 0.5]) == (50, "cap")  # first check at or after the cap
    rule = StoppingRule(min_steps=10, max_steps=-1, patience=2)
    assert run(rule, [5.0, 4.0, 3.0, 2.0, 1.0, 0.5]) == (None, "")
    rule = StoppingRule(min_steps=100, max_steps=20, patience=2)  # a cap below the floor wins
    assert run(rule, [5.0, 4.0, 3.0]) == (20, "cap")


def test_min_delta_makes_small_improvements_not_count():
    values = [5.0, 4.95, 4.9, 4.85, 4.8]
    assert run(StoppingRule(0, None, patience=2, min_delta=0.0), values) == (None, "")
    assert run(StoppingRule(0, None, patience=2, min_delta=0.1), values) == (30, "plateau")


def test_smoothing_rides_out_a_single_noisy_check():
    values = [5.0, 4.0, 3.0, 3.5, 2.0, 1.5]
    assert run(StoppingRule(0, None, patience=1), values) == (40, "plateau")
    rule = StoppingRule(0, None, patience=1, smoothing=0.5)
    assert run(rule, values) == (None, "")
    smoothed = [c.smoothed for c in rule.checks]
    assert smoothed[:4] == [5.0, 4.5, 3.75, 3.625]  # s_t = 0.5 s_{t-1} + 0.5 v_t


def test_same_checks_same_decisions_and_state_round_trip():
    first = StoppingRule(20, 200, patience=2, min_delta=0.01, smoothing=0.3)
    second = StoppingRule(20, 200, patience=2, min_delta=0.01, smoothing=0.3)
    assert run(first, FALLING_THEN_FLAT) == run(second, FALLING_THEN_FLAT)
    assert first.checks == second.checks
    resumed = StoppingRule(20, 200, patience=2, min_delta=0.01, smoothing=0.3)
    partial = StoppingRule(20, 200, patience=2, min_delta=0.01, smoothing=0.3)
    for n, value in enumerate(FALLING_THEN_FLAT[:4], start=1):
        partial.update(10 * n, value)
    resumed.load_state_dict(partial.state_dict())
    for n, value in enumerate(FALLING_THEN_FLAT[4:], start=5):
        resumed.update(10 * n, value)
    assert resumed.checks[: len(first.checks)] == first.checks


def test_bad_settings_and_checks_are_refused():
    with pytest.raises(ValueError, match="patience"):
        StoppingRule(0, None, patience=0)
    with pytest.raises(ValueError, match="smoothing"):
        StoppingRule(0, None, patience=1, smoothing=1.0)
    rule = StoppingRule(0, None, patience=1)
    with pytest.raises(ValueError, match="finite"):
        rule.update(10, math.nan)
    rule.update(10, 1.0)
    with pytest.raises(ValueError, match="increasing steps"):
        rule.update(10, 0.5)
