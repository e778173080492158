"""A histogram over an unbounded score range, with memory independent of the number of values (the
streaming pixel metrics' accumulator)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class ExpandingHistogram:
    """Histogram with a fixed number of bins on the global grid {k * 2**exponent : k integer}.

    Bin i of the window holds values in [(start + i) * 2**exponent, (start + i + 1) * 2**exponent). Values
    outside the window move it; when the occupied range no longer fits in ``n_bins`` bins, the exponent
    grows (merging aligned pairs of bins, an exact re-binning). As every histogram lives on the same global
    grid, two histograms merge exactly at the larger of their exponents. The first values set the finest
    exponent that fits them, so the final bin width is below 2 * (value range) / (n_bins - 1).

    Attributes:
        counts: [channels, n_bins] float64 sums of weights per bin.
    """

    _MIN_EXPONENT = -100  # keeps 2**-exponent a normal float
    _MANTISSA_BITS = 40  # bins finer than |value| * 2**-40 resolve nothing a float32 score can hold

    def __init__(self, n_bins: int, channels: int) -> None:
        self.n_bins = n_bins
        self.counts = torch.zeros(channels, n_bins, dtype=torch.float64)
        self.exponent: int | None = None  # None while empty
        self.start = 0

    def add(self, values: Tensor, channel: int, weights: Tensor | None = None) -> None:
        """Add values [M] (weights [M], default 1) to one channel, moving or coarsening the grid as needed."""
        if values.numel() == 0:
            return
        values = values.double()
        if self.is_empty:
            self.exponent = None  # nothing to keep: restart at the finest grid that fits the new values
        self._cover(float(values.min()), float(values.max()))
        local = self._grid_index(values, self.exponent) - self.start
        weights = None if weights is None else weights.double()
        self.counts[channel] += torch.bincount(local, weights=weights, minlength=self.n_bins)

    def merge(self, other: ExpandingHistogram) -> None:
        """Add the counts of ``other`` (same n_bins and channels), re-binned onto a common grid."""
        if other.is_empty:
            return
        if self.is_empty:
            self.exponent, self.start, self.counts = other.exponent, other.start, other.counts.clone()
            return
        exponent = max(self.exponent, other.exponent)
        low_a, high_a = self._occupied(exponent)
        low_b, high_b = other._occupied(exponent)
        exponent, start = self._fit(exponent, min(low_a, low_b), max(high_a, high_b))
        self.counts = self._regridded(exponent, start) + other._regridded(exponent, start)
        self.exponent, self.start = exponent, start

    @property
    def is_empty(self) -> bool:
        return self.exponent is None or not bool(self.counts.any())

    def edges(self) -> Tensor:
        """[n_bins + 1] float64 bin edges of the current window (call only when not empty)."""
        return (self.start + torch.arange(self.n_bins + 1, dtype=torch.float64)) * 2.0**self.exponent

    def to_tensor(self) -> Tensor:
        """The histogram as one float64 tensor [channels * n_bins + 3]: the counts row by row, then
        (occupied 1/0, exponent, start). Exponent and start are integers far below 2**53, exact in float64."""
        grid = [0.0, 0.0, 0.0] if self.is_empty else [1.0, float(self.exponent), float(self.start)]
        return torch.cat([self.counts.flatten(), torch.tensor(grid, dtype=torch.float64)])

    @classmethod
    def from_tensor(cls, state: Tensor, channels: int) -> ExpandingHistogram:
        """The histogram that :meth:`to_tensor` encoded as ``state`` [channels * n_bins + 3] (any device)."""
        state = state.detach().cpu().double()
        n_bins, remainder = divmod(state.numel() - 3, channels)
        if remainder or n_bins < 1:
            raise ValueError(f"histogram state of {state.numel()} values does not hold {channels} channels")
        histogram = cls(n_bins, channels)
        occupied, exponent, start = state[-3:].tolist()
        if occupied:
            histogram.counts = state[:-3].reshape(channels, n_bins).clone()
            histogram.exponent, histogram.start = int(exponent), int(start)
        return histogram

    @staticmethod
    def _grid_index(values: Tensor, exponent: int) -> Tensor:
        """Global bin index floor(value / 2**exponent) (exact: scaling by a power of two does not round)."""
        return torch.floor(values * 2.0**-exponent).long()

    def _initial_exponent(self, low: float, high: float) -> int:
        span_bits = math.frexp(high - low)[1]  # high - low < 2**span_bits
        exponent = span_bits - self.n_bins.bit_length() - 1 if high > low else self._MIN_EXPONENT
        magnitude_bits = math.frexp(max(abs(low), abs(high)))[1]
        return max(exponent, magnitude_bits - self._MANTISSA_BITS, self._MIN_EXPONENT)

    def _fit(self, exponent: int, low_index: int, high_index: int) -> tuple[int, int]:
        """Smallest exponent >= ``exponent`` whose window holds global indices [low, high] (given at
        ``exponent``), and the window start that centres them."""
        while high_index - low_index + 1 > self.n_bins:
            exponent, low_index, high_index = exponent + 1, low_index >> 1, high_index >> 1
        return exponent, low_index - (self.n_bins - (high_index - low_index + 1)) // 2

    def _occupied(self, exponent: int) -> tuple[int, int]:
        """Global indices (at ``exponent`` >= self.exponent) of the lowest and highest non-empty bins."""
        occupied = torch.nonzero(self.counts.any(dim=0)).flatten()
        shift = exponent - self.exponent
        return (self.start + int(occupied[0])) >> shift, (self.start + int(occupied[-1])) >> shift

    def _cover(self, low: float, high: float) -> None:
        """Move/coarsen the window so that it holds [low, high] and all current counts."""
        if self.exponent is None:
            exponent = self._initial_exponent(low, high)
            scale = 2.0**-exponent
            self.exponent, self.start = self._fit(exponent, math.floor(low * scale), math.floor(high * scale))
            return
        scale = 2.0**-self.exponent
        low_index, high_index = math.floor(low * scale), math.floor(high * scale)
        if low_index >= self.start and high_index < self.start + self.n_bins:
            return
        occupied_low, occupied_high = self._occupied(self.exponent)
        exponent, start = self._fit(
            self.exponent, min(low_index, occupied_low), max(high_index, occupied_high)
        )
        self.counts = self._regridded(exponent, start)
        self.exponent, self.start = exponent, start

    def _regridded(self, exponent: int, start: int) -> Tensor:
        """Counts [channels, n_bins] moved onto the window (exponent >= self.exponent, start); every
        non-empty bin must land inside it."""
        global_index = self.start + torch.arange(self.n_bins, dtype=torch.int64)
        local = torch.bitwise_right_shift(global_index, min(exponent - self.exponent, 63)) - start
        occupied = self.counts.any(dim=0)
        if occupied.any() and (local[occupied].min() < 0 or local[occupied].max() >= self.n_bins):
            raise RuntimeError("internal error: re-binned histogram does not fit its window")
        regridded = torch.zeros_like(self.counts)
        regridded.index_add_(1, local[occupied], self.counts[:, occupied])
        return regridded
