"""Small helpers shared by the benches: percentiles, peak RSS, seeded price walks."""

from __future__ import annotations

import math
import random
import resource
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RandomWalk", "median_spread", "peak_rss_mb", "percentile"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN without samples."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if not samples:
        return math.nan
    ordered = sorted(samples)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median_spread(samples: Sequence[float]) -> tuple[float, float]:
    """The median of ``samples`` and their spread, (max - min) / median (0.1: the samples
    lie within 10 % of the median's size); NaN without samples."""
    if not samples:
        return math.nan, math.nan
    middle = percentile(samples, 0.5)
    return middle, (max(samples) - min(samples)) / middle if middle else math.nan


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB.

    Linux's ``VmHWM`` first: ``ru_maxrss`` survives ``exec``, so a child process started by
    a larger parent would report the parent's peak. ``ru_maxrss`` elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RandomWalk:
    """Seeded, independent random walks of integer prices (in ticks), one per symbol.

    Each step is normal with standard deviation ``levels_per_tick * level`` ticks (it may
    change between steps); a step that would leave ``[start / 2, start * 3 / 2]`` is
    reflected.
    """

    def __init__(self, symbols: int, start: int, level: int, seed: int) -> None:
        if start < 2 or level < 1:
            raise ValueError("start must be at least 2 and level at least 1")
        self._rngs = [random.Random(seed * 1_000_003 + i) for i in range(symbols)]
        self._prices = [start] * symbols
        self._level = level
        self._low, self._high = start // 2, start * 3 // 2
        self.levels_per_tick = 0.0

    def next(self, i: int) -> int:
        price = self._prices[i]
        step = round(self._rngs[i].gauss(0.0, self.levels_per_tick * self._level))
        if not self._low <= price + step <= self._high:
            step = -step
        price = min(max(price + step, self._low), self._high)
        self._prices[i] = price
        return price
