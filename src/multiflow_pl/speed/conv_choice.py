"""Convolution algorithm chosen by measurement on the running machine (``model.convolutions.algorithm=auto``).

Like cuDNN's benchmark mode: the first time a convolution of a given kind is met (input and weight shapes and
strides, groups, dtype, device, thread count, which inputs need gradients), every candidate algorithm that can
compute it is timed on copies of its inputs, the fastest is remembered for the process and used from then
on. Candidates are the library's convolution (``"direct"``) and the project's Winograd convolution
(:mod:`multiflow_pl.speed.winograd`, CPU float32/64, 3x3 and 5x5 kernels); on CUDA and in half precision
only the library's. With gradients on, a timing is forward + backward (as in a training step); without,
the forward alone.

The timing is made robust to other processes on the machine: with one torch thread the clock is the
thread's CPU time (waiting for a core does not count); candidates alternate, in turn first and second; the
fastest of the timed rounds decides (load only ever adds time); and when the two are within ``margin`` of
each other, more rounds are timed (up to ``max_rounds``). A choice still within the margin is a tie, and a
tie goes to ``"direct"`` (the library's: no extra memory and about half Winograd's float32 rounding error).

Choices can also persist between processes: set ``MULTIFLOW_PL_CONV_CACHE`` to a JSON file. Its entries are
keyed by the CPU model, the torch build and the thread count, so a file carried to another machine or torch
version is ignored there (and completed with that machine's own entries).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from multiflow_pl.speed import winograd
from multiflow_pl.utils.atomic import write_atomic
from multiflow_pl.utils.machine import cpu_model

ConvFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, int], torch.Tensor]


def _direct(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    return F.conv2d(x, weight, bias, groups=groups)


def _winograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    return winograd.winograd_conv2d(x, weight, bias, groups)


ALGORITHMS: dict[str, ConvFn] = {"direct": _direct, "winograd": _winograd}
"""Name -> ``fn(x [N, G*Cin, H, W], weight [G*Cout, Cin, r, r], bias [G*Cout] | None, groups)``, 'valid'
stride-1 convolution."""

CACHE_ENV = "MULTIFLOW_PL_CONV_CACHE"


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int, algorithm: str
) -> torch.Tensor:
    """'Valid' stride-1 convolution ``x [N, G*Cin, H, W]`` -> ``[N, G*Cout, H-r+1, W-r+1]`` by ``algorithm``
    (a name of :data:`ALGORITHMS`)."""
    return ALGORITHMS[algorithm](x, weight, bias, groups)


def candidates(x: torch.Tensor, weight: torch.Tensor) -> list[str]:
    """Algorithms able to compute this convolution: always ``"direct"``; ``"winograd"`` for 3x3 and 5x5
    kernels on CPU in float32/64."""
    names = ["direct"]
    if winograd.supports(weight) and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        names.append("winograd")
    return names


@functools.cache
def machine_key() -> str:
    """What a timing depends on besides the convolution: CPU model and the torch build."""
    return f"{cpu_model()} | torch {torch.__version__} ({torch.version.git_version[:12]})"


def conv_key(x: torch.Tensor, weight: torch.Tensor, groups: int) -> str:
    """One convolution kind: shapes, strides, groups, dtype, device, threads and which of input and weight
    need gradients (``grad`` + two digits; a backward without the input gradient costs about a third
    less)."""
    grads = "".join(str(int(torch.is_grad_enabled() and t.requires_grad)) for t in (x, weight))
    return (
        f"x{tuple(x.shape)}s{x.stride()} w{tuple(weight.shape)} g{groups} {x.dtype} {x.device} "
        f"t{torch.get_num_threads()} grad{grads}"
    )


def default_clock() -> float:
    """Seconds for timing a candidate: the thread's CPU time when torch runs on one thread (other processes
    on the machine do not inflate it), else wall time."""
    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


class ConvChooser:
    """Times the candidate algorithms of each new convolution kind and remembers the fastest.

    Args:
        clock: seconds, as :func:`default_clock` (tests pass a fake one).
        rounds: timed rounds per candidate after one untimed warm-up; candidates alternate within a round
            (the order flips each round) and each candidate's fastest round counts.
        max_rounds: the most rounds timed while the best two are within ``margin``.
        margin: relative difference below which two candidates count as equally fast; a final tie goes to
            the first candidate (``"direct"``).
        cache_file: JSON file to read and extend with choices (None: this process only).
    """

    def __init__(
        self,
        clock: Callable[[], float] = default_clock,
        rounds: int = 3,
        max_rounds: int = 9,
        margin: float = 0.05,
        cache_file: Path | None = None,
    ) -> None:
        if not 1 <= rounds <= max_rounds:
            raise ValueError(f"Need 1 <= rounds <= max_rounds, got {rounds} and {max_rounds}.")
        self.clock, self.rounds, self.max_rounds, self.margin = clock, rounds, max_rounds, margin
        self.cache_file = cache_file
        self.choices: dict[str, str] = {}
        self.timings: dict[str, dict[str, float]] = {}
        if cache_file is not None and cache_file.exists():
            self.choices.update(json.loads(cache_file.read_text()).get(machine_key(), {}))

    def choose(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> str:
        """The algorithm for convolving ``x [N, G*Cin, H, W]`` by ``weight [G*Cout, Cin, r, r]``, timing
        the candidates on first use of this kind (see :func:`conv_key`)."""
        names = candidates(x, weight)
        if len(names) == 1:
            return names[0]
        key = conv_key(x, weight, groups)
        if key not in self.choices:
            self.timings[key] = self._measure(names, x, weight, bias, groups)
            self.choices[key] = self._pick(names, self.timings[key])
            self._save()
        return self.choices[key]

    def _close(self, times: dict[str, float]) -> bool:
        """Whether the fastest two candidates are within the margin of each other."""
        best, second = sorted(times.values())[:2]
        return second <= best * (1 + self.margin)

    def _pick(self, names: list[str], times: dict[str, float]) -> str:
        """The fastest candidate; the first of ``names`` when it is within the margin of the fastest."""
        fastest = min(names, key=times.__getitem__)
        return names[0] if times[names[0]] <= times[fastest] * (1 + self.margin) else fastest

    def _measure(
        self, names: list[str], x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int
    ) -> dict[str, float]:
        """Fastest round's seconds per candidate on detached copies of the inputs (forward, + backward if
        needed)."""
        grads = torch.is_grad_enabled()
        x, weight, bias = (
            None if t is None else t.detach().requires_grad_(grads and t.requires_grad)
            for t in (x, weight, bias)
        )
        needs_grad = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
        grad_out = None

        def run(name: str) -> None:
            nonlocal grad_out
            out = conv2d(x, weight, bias, groups, name)
            if needs_grad:
                grad_out = torch.ones_like(out) if grad_out is None else grad_out
                torch.autograd.grad(out, needs_grad, grad_out)
            if out.is_cuda:
                torch.cuda.synchronize(out.device)

        for name in names:  # warm-up: first-use allocations and kernel set-up
            run(name)
        best = dict.fromkeys(names, math.inf)
        round_ = 0
        while round_ < self.rounds or (round_ < self.max_rounds and self._close(best)):
            for name in names if round_ % 2 == 0 else names[::-1]:
                start = self.clock()
                run(name)
                best[name] = min(best[name], self.clock() - start)
            round_ += 1
        return best

    def _save(self) -> None:
        """Merge this process's choices into the cache file (atomic replace)."""
        if self.cache_file is None:
            return
        stored = json.loads(self.cache_file.read_text()) if self.cache_file.exists() else {}
        stored[machine_key()] = {**stored.get(machine_key(), {}), **self.choices}
        write_atomic(self.cache_file, json.dumps(stored, indent=1, sort_keys=True))


@functools.cache
def default_chooser() -> ConvChooser:
    """The process's chooser (cache file from ``$MULTIFLOW_PL_CONV_CACHE`` if set)."""
    path = os.environ.get(CACHE_ENV)
    return ConvChooser(cache_file=Path(path) if path else None)
