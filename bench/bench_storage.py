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

``measure_storage_backends`` compares, per backend (SQLite, and PostgreSQL and MariaDB
servers started from the system binaries in temporary directories, as the tests do),
batched ``save_fills`` through the repository with raw SQLAlchemy Core executemany of the
same rows into the same table, and times the replay of 10,000 buffered trades from the
write buffer's journal.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.domain import Fill, Order
from quantmesh.grid.state import LevelState
from quantmesh.storage import models
from quantmesh.storage.buffer import BufferedRepository
from quantmesh.storage.engine import DbType, create_engine_for
from quantmesh.storage.journal import DeadLetters, Journal, dead_letter_path
from quantmesh.storage.records import Record
from quantmesh.storage.repository import SqlRepository

__all__ = ["measure_storage", "measure_storage_backends"]

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


# --- per backend: batched saves vs raw executemany, and replaying the write buffer ----------


def _server_backends(workdir: Path) -> list[tuple[str, DbType, str, Callable[[], None]]]:
    """(name, db type, URL, stop) of every backend whose server can be started here."""
    from tests.servers.mariadb import MariaDBServer
    from tests.servers.postgres import PostgresServer

    backends: list[tuple[str, DbType, str, Callable[[], None]]] = [
        ("SQLite", "sqlite", str(workdir / "backend.db"), lambda: None)
    ]
    makers: list[tuple[str, DbType, Callable[[], PostgresServer | MariaDBServer]]] = [
        ("PostgreSQL", "postgres", PostgresServer),
        ("MariaDB", "mysql", MariaDBServer),
    ]
    for name, db_type, make in makers:
        try:
            server = make()
            server.start()
        except BaseException as exc:  # pytest.skip (binary missing) is a BaseException
            if isinstance(exc, KeyboardInterrupt):
                raise
            print(f"{name} skipped: {exc}", file=sys.stderr)
            continue
        backends.append((name, db_type, server.url(server.create_database("bench")), server.close))
    return backends


def _fills(start: int, count: int) -> list[Fill]:
    return [_fill(n) for n in range(start, start + count)]


def _raw_rows(fills: Sequence[Fill]) -> list[dict[str, object]]:
    return [
        {"exchange": "simulated", **{f.name: getattr(fill, f.name) for f in fields(fill)}}
        for fill in fills
    ]


async def _raw_insert(engine: Engine | AsyncEngine, rows: list[dict[str, object]]) -> None:
    statement = insert(models.trades)
    if isinstance(engine, AsyncEngine):
        async with engine.begin() as conn:
            await conn.execute(statement, rows)
    else:
        await asyncio.to_thread(_sync_insert, engine, statement, rows)


def _sync_insert(engine: Engine, statement: Any, rows: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        conn.execute(statement, rows)


async def _backend_figures(
    db_type: DbType, url: str, journal: Path, rows: int, batch: int, replay: int
) -> dict[str, float]:
    repo = SqlRepository(create_engine_for(db_type, url), "simulated")
    await repo.start()
    raw_engine = create_engine_for(db_type, url)
    try:
        # warm-up: caches, pools, files
        await repo.save_fills(_fills(10_000_000, batch))
        await _raw_insert(raw_engine, _raw_rows(_fills(20_000_000, batch)))
        best_repo = best_raw = math.inf
        offset = 0
        for _ in range(2):  # alternate, keep the best of each
            started = time.perf_counter()
            for n in range(0, rows, batch):
                await repo.save_fills(_fills(1_000_000 + offset + n, batch))
            best_repo = min(best_repo, time.perf_counter() - started)
            prepared = [
                _raw_rows(_fills(2_000_000 + offset + n, batch)) for n in range(0, rows, batch)
            ]
            started = time.perf_counter()
            for chunk in prepared:
                await _raw_insert(raw_engine, chunk)
            best_raw = min(best_raw, time.perf_counter() - started)
            offset += rows
    finally:
        await repo.close()
        if isinstance(raw_engine, AsyncEngine):
            await raw_engine.dispose()
        else:
            raw_engine.dispose()

    # replay: a journal of `replay` buffered trades (one save_fill each), drained at start
    await asyncio.to_thread(_write_journal, journal, replay)
    buffered = BufferedRepository(
        SqlRepository(create_engine_for(db_type, url), "simulated"), journal, retry_interval=3600
    )
    await buffered.inner.start()  # the schema check is not part of the replay
    started = time.perf_counter()
    await buffered.start()
    replay_s = time.perf_counter() - started
    assert buffered.pending == 0
    await buffered.close()
    return {
        "repo_rows_per_s": rows / best_repo,
        "raw_rows_per_s": rows / best_raw,
        "replay_s": replay_s,
        "replay_trades": float(replay),
    }


def _write_journal(journal: Path, trades: int) -> None:
    """A journal as an outage leaves it: one record per ``save_fill``."""
    journal.unlink(missing_ok=True)
    writer = Journal(journal, DeadLetters(dead_letter_path(journal)))
    writer.open()
    writer.append([Record(n + 1, "fills", fills=(_fill(3_000_000 + n),)) for n in range(trades)])
    writer.close()


def measure_storage_backends(
    rows: int = 10_000, batch: int = 500, replay: int = 10_000
) -> dict[str, dict[str, float]]:
    """Per backend (SQLite, and PostgreSQL and MariaDB where their binaries exist): rows per
    second of batched ``save_fills`` through the repository and of raw SQLAlchemy Core
    executemany into the same table, and seconds to replay ``replay`` buffered trades."""
    previous = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),  # no "journal found"
        cache_logger_on_first_use=False,
    )
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="quantmesh-bench-") as workdir:
            backends = _server_backends(Path(workdir))
            try:
                for name, db_type, url, _stop in backends:
                    journal = Path(workdir) / f"journal-{db_type}.jsonl"
                    results[name] = asyncio.run(
                        _backend_figures(db_type, url, journal, rows, batch, replay)
                    )
            finally:
                for *_, stop in backends:
                    stop()
    finally:
        structlog.configure(**previous)
    return results


if __name__ == "__main__":
    for key, value in measure_storage().items():
        print(f"{key:32} {value:10.1f}")
    for backend, figures in measure_storage_backends().items():
        for key, value in figures.items():
            print(f"{backend:12} {key:20} {value:12.3f}")
