"""NopLock overhead: ``try_lock`` + ``unlock`` against two empty coroutine calls.

The trader pays one ``try_lock`` and one ``unlock`` around every order it places or
cancels; with the single-instance ``NopLock`` that must cost next to nothing beyond the
two awaits themselves. Rounds of the lock loop and the baseline loop alternate and the
fastest round of each is kept, so a burst of noise hits neither side alone.
"""

from __future__ import annotations

import asyncio
import math
import time

from quantmesh.lock.base import Lease
from quantmesh.lock.nop import NopLock

__all__ = ["measure_nop_lock"]

_KEY = "order:simulated:ETHUSDT:3"
_TTL = 5.0
_LEASE = Lease(_KEY, "nop", 1, math.inf)


async def _noop_lock(key: str, ttl: float) -> Lease | None:
    return _LEASE


async def _noop_unlock(lease: Lease) -> bool:
    return True


async def _lock_round(lock: NopLock, cycles: int) -> float:
    start = time.perf_counter()
    for _ in range(cycles):
        lease = await lock.try_lock(_KEY, _TTL)
        if lease is not None:
            await lock.unlock(lease)
    return time.perf_counter() - start


async def _baseline_round(cycles: int) -> float:
    start = time.perf_counter()
    for _ in range(cycles):
        lease = await _noop_lock(_KEY, _TTL)
        if lease is not None:
            await _noop_unlock(lease)
    return time.perf_counter() - start


async def _measure(cycles: int, rounds: int) -> tuple[float, float]:
    lock = NopLock()
    await _lock_round(lock, min(cycles, 1000))  # warm up
    await _baseline_round(min(cycles, 1000))
    best_lock = best_base = math.inf
    for _ in range(rounds):
        best_lock = min(best_lock, await _lock_round(lock, cycles))
        best_base = min(best_base, await _baseline_round(cycles))
    return best_lock, best_base


def measure_nop_lock(cycles: int = 200_000, rounds: int = 5) -> dict[str, float]:
    """Microseconds per try_lock+unlock cycle, per baseline cycle, and their difference."""
    if cycles < 1 or rounds < 1:
        raise ValueError("cycles and rounds must be at least 1")
    lock_s, base_s = asyncio.run(_measure(cycles, rounds))
    lock_us = lock_s / cycles * 1e6
    base_us = base_s / cycles * 1e6
    return {
        "lock_us_per_cycle": lock_us,
        "baseline_us_per_cycle": base_us,
        "overhead_us_per_cycle": lock_us - base_us,
    }


if __name__ == "__main__":
    print(measure_nop_lock())
