"""Seeded random-walk candles: the same seed gives the same candles (tests, benches).

Each minute moves the price by a geometric random step; within the candle the high and
low reach beyond the open and close by a random share of the step size.
"""

from __future__ import annotations

import math
import random

from quantmesh.research.candles import Candles

__all__ = ["random_walk_candles"]


def random_walk_candles(
    n: int,
    *,
    start_ms: int = 1_735_689_600_000,  # 2025-01-01T00:00Z
    step_ms: int = 60_000,
    price: float = 2000.0,
    volatility: float = 0.001,
    seed: int = 1,
    decimals: int = 2,
) -> Candles:
    """``n`` candles of ``step_ms`` from ``start_ms``, prices rounded to ``decimals``."""
    rng = random.Random(seed)
    candles = Candles()
    close = price
    for i in range(n):
        open_ = close
        close = open_ * math.exp(rng.gauss(0.0, volatility))
        reach = abs(rng.gauss(0.0, volatility)) * 0.6
        high = max(open_, close) * (1 + reach * rng.random())
        low = min(open_, close) * (1 - reach * rng.random())
        candles.append(
            (
                start_ms + i * step_ms,
                round(open_, decimals),
                round(high, decimals),
                round(low, decimals),
                round(close, decimals),
                round(rng.random() * 10, 4),
            )
        )
    return candles
