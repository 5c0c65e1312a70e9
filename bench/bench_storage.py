"""The repository's hot-path calls on a SQLite file in a temporary directory.

Per call, awaited one after another as the trader awaits them: wall time and CPU time
(``time.process_time``, so the database thread's work counts too) of

- ``record_execution``: an open order, stored before, filled by one fill that moves one
  level (the trader's write between a fill and its next order);
- ``known_trade_ids`` of one trade id among the stored fills;
- ``save_order`` of a new open order (placing one);
- ``save_last_price``;

and, as their floor, ``thread_hop``: an empty call handed to a one-thread executor and
awaited, which every SQLite call pays once. Rounds alternate between the operations and
the fastest round of each is kept. Log events below warning are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import structlog

from quantmesh.domain import Fill, Order
from quantmesh.grid.state import LevelState
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository

__all__ = ["measure_storage"]

_SYMBOL = "ETH/USDT"
_T0 = 1_700_000_000.0


def _order(n: int, *, filled: bool = False) -> Order:
    return Order(
        symbol=_SYMBOL,
        side="buy",
        price=Decimal("1999.5"),
        amount=Decimal("0.05"),
        client_order_id=f"c{n}",
        exchange_order_id=f"x{n}",
        status="filled" if filled else "open",
        filled=Decimal("0.05") if filled else Decimal(0),
        created_at=_T0 + n,
        updated_at=_T0 + n + (0.5 if filled else 0.0),
    )


def _fill(n: int) -> Fill:
    return Fill(
        trade_id=f"t{n}",
        symbol=_SYMBOL,
        side="buy",
        price=Decimal("1999.5"),
        amount=Decimal("0.05"),
        fee=Decimal("0.00005"),
        fee_currency="ETH",
        client_order_id=f"c{n}",
        exchange_order_id=f"x{n}",
        ts=_T0 + n + 0.5,
    )


async def _timed(calls: int, call: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """Microseconds of wall and CPU time per call."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        await call(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / calls * 1e6, cpu / calls * 1e6


async def _measure(workdir: Path, calls: int, rounds: int) -> dict[str, float]:
    engine = create_engine_for(
        "sqlite", str(workdir / "bench.db"), pool_size=5, max_overflow=5, pool_recycle=1800
    )
    repo = SqlRepository(engine, "simulated")
    hop = ThreadPoolExecutor(max_workers=1)
    await repo.start()
    try:
        await repo.init_grid(_SYMBOL, Decimal(2000))
        placed = 0
        executed = 0

        async def save_order(_: int) -> None:
            nonlocal placed
            placed += 1
            await repo.save_order(_order(placed))

        async def record_execution(_: int) -> None:
            nonlocal executed
            executed += 1
            level = LevelState(executed % 40, Decimal("0.05"), Decimal("99.975"), executed)
            written = await repo.record_execution(
                _order(executed, filled=True), [_fill(executed)], [level], [], fence=1
            )
            assert written

        async def known_trade_ids(i: int) -> None:
            await repo.known_trade_ids(_SYMBOL, [f"t{1 + i % max(executed, 1)}"])

        async def save_last_price(i: int) -> None:
            await repo.save_last_price(_SYMBOL, Decimal("2000.25") + i, _T0 + i)

        loop = asyncio.get_running_loop()

        async def thread_hop(i: int) -> None:
            await loop.run_in_executor(hop, int)

        operations: dict[str, Callable[[int], Awaitable[object]]] = {
            "save_order": save_order,  # first: record_execution fills these orders
            "record_execution": record_execution,
            "known_trade_ids": known_trade_ids,
            "save_last_price": save_last_price,
            "thread_hop": thread_hop,
        }
        for op in operations.values():  # warm up caches and the file
            await _timed(min(calls, 50), op)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for name, op in operations.items():
                wall, cpu = await _timed(calls, op)
                old_wall, old_cpu = best.get(name, (math.inf, math.inf))
                best[name] = (min(old_wall, wall), min(old_cpu, cpu))
    finally:
        await repo.close()
        hop.shutdown()
    result: dict[str, float] = {}
    for name, (wall, cpu) in best.items():
        result[f"{name}_wall_us"] = wall
        result[f"{name}_cpu_us"] = cpu
    return result


def measure_storage(calls: int = 500, rounds: int = 3) -> dict[str, float]:
    """Wall and CPU microseconds per call of each hot-path repository operation, as
    ``<operation>_wall_us`` and ``<operation>_cpu_us``."""
    previous = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="quantmesh-bench-") as workdir:
            return asyncio.run(_measure(Path(workdir), calls, rounds))
    finally:
        structlog.configure(**previous)


if __name__ == "__main__":
    for key, value in measure_storage().items():
        print(f"{key:32} {value:10.1f}")
