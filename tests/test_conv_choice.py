"""conv_algorithm="auto": the choice by measurement, with a fake clock (no real timings are asserted)."""

import json
from pathlib import Path

import pytest
import torch
from helpers.flows import make_flow, plain

from multiflow_pl.models.flow import noise_condition
from multiflow_pl.speed import conv_choice
from multiflow_pl.utils.machine import cpu_flags, cpu_model


class FakeClock:
    """A clock that moves only when a fake algorithm runs; each run adds that algorithm's next cost."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch, self.now, self.calls = monkeypatch, 0.0, []

    def __call__(self) -> float:
        return self.now

    def install(self, **costs: list[float]) -> "FakeClock":
        """Wrap the named algorithms: a run computes as before and costs ``costs[name]`` in turn (cycled)."""
        for name, cost in costs.items():
            self.monkeypatch.setitem(conv_choice.ALGORITHMS, name, self._timed(name, cost))
        return self

    def _timed(self, name, costs):
        real = conv_choice.ALGORITHMS[name]

        def run(*args):
            self.calls.append(name)
            self.now += costs[(self.calls.count(name) - 1) % len(costs)]
            return real(*args)

        return run


@pytest.fixture
def clock(monkeypatch):
    return FakeClock(monkeypatch)


def _conv(k=3, channels=4, dtype=torch.float32, requires_grad=True, size=6):
    x = torch.randn(1, channels, size, size, dtype=dtype, requires_grad=requires_grad)
    return x, torch.randn(channels, channels, k, k, dtype=dtype, requires_grad=requires_grad), None, 1


@pytest.mark.parametrize(("direct", "winograd", "expected"), [(1.0, 2.0, "direct"), (2.0, 1.0, "winograd")])
def test_picks_the_faster_candidate(clock, direct, winograd, expected):
    clock.install(direct=[direct], winograd=[winograd])
    chooser = conv_choice.ConvChooser(clock=clock, rounds=3)
    assert chooser.choose(*_conv()) == expected
    # one warm-up and three timed rounds, the candidates alternating, the order flipping each round
    warm_up, forward, flipped = ["direct", "winograd"], ["direct", "winograd"], ["winograd", "direct"]
    assert clock.calls == warm_up + forward + flipped + forward
    assert chooser.timings[next(iter(chooser.timings))] == {"direct": direct, "winograd": winograd}


def test_fastest_round_ignores_rounds_slowed_by_load(clock):
    # the first cost is the warm-up; two of Winograd's three rounds are hit by another process
    clock.install(direct=[9.0, 2.0, 2.0, 2.0], winograd=[9.0, 30.0, 1.0, 30.0])
    assert conv_choice.ConvChooser(clock=clock, rounds=3).choose(*_conv()) == "winograd"


def test_close_candidates_are_timed_again_until_they_separate(clock):
    # within 5% for three rounds, then Winograd's fourth round is clearly faster
    clock.install(direct=[1.0], winograd=[9.0, 1.02, 1.02, 1.02, 0.5])
    chooser = conv_choice.ConvChooser(clock=clock, rounds=3, max_rounds=9, margin=0.05)
    assert chooser.choose(*_conv()) == "winograd"
    assert clock.calls.count("winograd") == 1 + 4  # warm-up + 4 rounds


@pytest.mark.parametrize(("winograd", "expected"), [(0.97, "direct"), (0.9, "winograd")])
def test_a_tie_within_the_margin_goes_to_direct(clock, winograd, expected):
    clock.install(direct=[1.0], winograd=[winograd])
    chooser = conv_choice.ConvChooser(clock=clock, rounds=2, max_rounds=6, margin=0.05)
    assert chooser.choose(*_conv()) == expected
    assert clock.calls.count("direct") == 1 + (6 if expected == "direct" else 2)


def test_default_clock_is_cpu_time_on_one_thread(monkeypatch):
    monkeypatch.setattr(conv_choice.time, "thread_time", lambda: 1.0)
    monkeypatch.setattr(conv_choice.time, "perf_counter", lambda: 2.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert conv_choice.default_clock() == 1.0
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert conv_choice.default_clock() == 2.0


def test_rounds_must_fit_under_max_rounds():
    with pytest.raises(ValueError, match="rounds"):
        conv_choice.ConvChooser(rounds=4, max_rounds=3)


def test_choice_is_cached_per_kind(clock, monkeypatch):
    clock.install(direct=[1.0], winograd=[2.0])
    chooser = conv_choice.ConvChooser(clock=clock, rounds=1)
    x, weight, bias, groups = _conv()
    chooser.choose(x, weight, bias, groups)
    n_calls = len(clock.calls)
    chooser.choose(torch.randn_like(x).requires_grad_(), weight, bias, groups)  # same kind: no timing
    assert len(clock.calls) == n_calls
    kinds = [
        _conv(size=7),  # shape
        _conv(dtype=torch.float64),  # dtype
        _conv(requires_grad=False),  # no gradients: forward only
        (x.detach(), weight, bias, groups),  # the weight's gradient alone (a flow's first block)
    ]
    for conv in kinds:
        chooser.choose(*conv)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)  # threads
    chooser.choose(x, weight, bias, groups)
    assert len(chooser.choices) == 6 and len(clock.calls) == 6 * n_calls


def test_times_forward_and_backward_when_gradients_are_needed(clock, monkeypatch):
    clock.install(direct=[1.0], winograd=[1.0])
    backward = []
    real_grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: backward.append(1) or real_grad(*a, **k))
    chooser = conv_choice.ConvChooser(clock=clock, rounds=1, max_rounds=1)
    chooser.choose(*_conv())
    assert len(backward) == 4  # 2 candidates x (warm-up + 1 round)
    with torch.no_grad():
        chooser.choose(*_conv())
    with torch.inference_mode():
        chooser.choose(*_conv(size=5))
    assert len(backward) == 4


@pytest.mark.parametrize(
    "conv",
    [
        _conv(k=7),  # no Winograd tile size
        _conv(dtype=torch.bfloat16),  # half precision
        (torch.randn(1, 4, 6, 6), torch.randn(4, 2, 3, 1), None, 2),  # not square
    ],
)
def test_a_single_candidate_is_not_timed(clock, conv):
    clock.install(direct=[1.0], winograd=[1.0])
    chooser = conv_choice.ConvChooser(clock=clock)
    assert chooser.choose(*conv) == "direct"
    assert clock.calls == [] and chooser.choices == {}


def test_cache_file_keeps_choices_per_machine(clock, tmp_path, monkeypatch):
    clock.install(direct=[2.0], winograd=[1.0])
    path = tmp_path / "sub" / "conv.json"
    assert conv_choice.ConvChooser(clock=clock, rounds=1, cache_file=path).choose(*_conv()) == "winograd"
    stored = json.loads(path.read_text())
    assert list(stored) == [conv_choice.machine_key()]
    n_calls = len(clock.calls)
    again = conv_choice.ConvChooser(clock=clock, rounds=1, cache_file=path)
    assert again.choose(*_conv()) == "winograd" and len(clock.calls) == n_calls  # read, not timed
    monkeypatch.setattr(conv_choice, "machine_key", lambda: "another CPU | torch 0")
    other = conv_choice.ConvChooser(clock=clock, rounds=1, cache_file=path)
    assert other.choices == {}
    other.choose(*_conv())
    assert len(clock.calls) == 2 * n_calls
    assert set(json.loads(path.read_text())) == {stored_key := next(iter(stored)), "another CPU | torch 0"}
    assert json.loads(path.read_text())[stored_key] == stored[stored_key]


def test_default_chooser_reads_the_environment(tmp_path, monkeypatch):
    conv_choice.default_chooser.cache_clear()
    monkeypatch.setenv(conv_choice.CACHE_ENV, str(tmp_path / "c.json"))
    try:
        assert conv_choice.default_chooser().cache_file == tmp_path / "c.json"
    finally:
        conv_choice.default_chooser.cache_clear()


@pytest.mark.parametrize("mode", ["per_edge", "shared"])
@pytest.mark.parametrize("winner", ["direct", "winograd"])
def test_auto_flow_matches_plain_whichever_algorithm_wins(clock, monkeypatch, mode, winner):
    clock.install(direct=[2.0 if winner == "winograd" else 1.0], winograd=[1.5])
    chooser = conv_choice.ConvChooser(clock, rounds=1)
    monkeypatch.setattr(conv_choice, "default_chooser", lambda: chooser)
    flow = make_flow(mode=mode, dtype=torch.float64, kernel_sizes=(3, 5), conv_algorithm="auto")
    x, cond = noise_condition(torch.randn(2, 5, 6, 5, 7, dtype=torch.float64))
    z, logdet = flow(x, cond)
    assert set(chooser.choices.values()) == {winner}
    with plain(flow):
        z_plain, logdet_plain = flow(x, cond)
    torch.testing.assert_close(z, z_plain, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet, logdet_plain, atol=1e-10, rtol=0)
    torch.testing.assert_close(flow.inverse(z, cond), x, atol=1e-9, rtol=0)


def test_machine_key_names_the_cpu_model_of_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # Linux: the first "model name" line, and its flags
        lines = cpuinfo.read_text().splitlines()
        model = next(line for line in lines if line.startswith("model name")).split(":", 1)[1].strip()
        flags = next(line for line in lines if line.startswith("flags")).split(":", 1)[1].split()
        assert cpu_model() == model and cpu_flags() == set(flags)
    assert cpu_model() and conv_choice.machine_key().startswith(f"{cpu_model()} | torch {torch.__version__}")
