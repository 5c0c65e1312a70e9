"""What the ownership check costs before every exchange call.

Before it sends a create or a cancel, the order sender asks whether the symbol's ownership
lease is still valid and when it ends (``Claim.valid`` and ``Claim.deadline``: a
``RenewedLease`` held through ``renewed``), and compares the level lease's deadline with
the clock. This measures those calls inside a real ``renewed`` block (on the in-process
lock, so no I/O is timed), against an empty call measured in the same run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bench.stats import median_spread
from quantmesh.lock.local import LocalLock
from quantmesh.lock.renewal import renewed


def _per_call_us(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def _nothing() -> None:
    return None


async def _measure(calls: int, rounds: int) -> tuple[list[float], list[float]]:
    checks: list[float] = []
    empty: list[float] = []
    async with renewed(LocalLock(), "owner:ETH/USDT", ttl=60.0) as held:
        deadline = held.lease.deadline
        clock = time.monotonic

        def check() -> bool:  # what the sender does before a call: lease, owner, deadline
            return clock() < deadline and held.valid() and held.deadline() > 0

        for _ in range(rounds):  # interleaved: the machine's load drifts
            checks.append(_per_call_us(check, calls))
            empty.append(_per_call_us(_nothing, calls))
    return checks, empty


def measure_ownership_check(calls: int = 200_000, rounds: int = 5) -> dict[str, float]:
    """Microseconds per check and per empty call (medians over rounds), with spreads."""
    checks, empty = asyncio.run(_measure(calls, rounds))
    check_us, check_spread = median_spread(checks)
    empty_us, _ = median_spread(empty)
    return {
        "check_us": check_us,
        "check_spread": check_spread,
        "empty_call_us": empty_us,
        "overhead_us": check_us - empty_us,
    }


if __name__ == "__main__":
    print(measure_ownership_check())
