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
batched ``save_fills`` through the repository with SQLAlchemy Core executemany of the same
rows into the same table and with the driver's own ``executemany`` (and, on PostgreSQL,
asyncpg's COPY), taking turns batch by batch for several rounds; and times the replay of
10,000 buffered trades of the write buffer, and loading them from its journal.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
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
from sqlalchemy import Engine, insert, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.stats import median_spread
from quantmesh.domain import Fill, Order
from quantmesh.grid.state import LevelState
from quantmesh.storage import models
from quantmesh.storage.engine import SQLITE_PRAGMAS, DbType, create_engine_for
from quantmesh.storage.journal import DeadLetters, Journal, dead_letter_path
from quantmesh.storage.pending import PendingWrites
from quantmesh.storage.records import Record
from quantmesh.storage.replay import Replayer
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


_COLUMNS = ("exchange", *(f.name for f in fields(Fill)))


def _raw_rows(fills: Sequence[Fill]) -> list[dict[str, object]]:
    return [
        {"exchange": "simulated", **{f.name: getattr(fill, f.name) for f in fields(fill)}}
        for fill in fills
    ]


def _driver_rows(fills: Sequence[Fill], db_type: DbType) -> list[tuple[object, ...]]:
    """The rows as the driver takes them (decimals as text on SQLite, as stored there)."""
    text = db_type == "sqlite"
    return [
        tuple(format(v, "f") if text and isinstance(v, Decimal) else v for v in row.values())
        for row in _raw_rows(fills)
    ]


async def _raw_insert(engine: Engine | AsyncEngine, rows: list[dict[str, object]]) -> None:
    statement = insert(models.trades)
    if isinstance(engine, AsyncEngine):
        async with engine.begin() as conn:
            await conn.execute(statement, rows)
    else:
        await asyncio.to_thread(_sync_insert, engine, statement, rows)


def _sync_insert(engine: Engine, statement: Any, rows: list[dict[str, object]]) -> None:
    with engine.connect() as conn:
        # the engine's SQLite connections do not BEGIN by themselves (see engine.py): without
        # this, every row would be a transaction of its own
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.execute(statement, rows)
        conn.commit()


_Write = Callable[[list[Any]], Awaitable[object]]


class _Driver:
    """The driver itself, without SQLAlchemy: a plain INSERT of the same rows through its
    ``executemany`` (asyncpg, aiomysql, sqlite3 on a thread of its own), and asyncpg's
    ``copy_records_to_table``; one transaction per batch."""

    def __init__(self, db_type: DbType, url: str) -> None:
        self._db_type = db_type
        self._url = make_url(url) if db_type != "sqlite" else None
        self._path = url
        self._conn: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1)
        listed = ", ".join(_COLUMNS)
        marks = {"postgres": [f"${n}" for n in range(1, len(_COLUMNS) + 1)]}.get(
            db_type, ["%s" if db_type == "mysql" else "?"] * len(_COLUMNS)
        )
        self._insert = f"INSERT INTO trades ({listed}) VALUES ({', '.join(marks)})"

    async def open(self) -> None:
        url = self._url
        if self._db_type == "postgres":
            import asyncpg

            assert url is not None
            self._conn = await asyncpg.connect(
                host=url.host, port=url.port, user=url.username, database=url.database
            )
        elif self._db_type == "mysql":
            import aiomysql

            assert url is not None
            self._conn = await aiomysql.connect(
                host=url.host,
                port=url.port,
                user=url.username,
                password=url.password or "",
                db=url.database,
                autocommit=False,
            )
        else:
            self._conn = await self._run(self._open_sqlite)

    def _open_sqlite(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        return conn

    async def _run(self, call: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def executemany(self, rows: list[Any]) -> None:
        conn = self._conn
        if self._db_type == "postgres":
            async with conn.transaction():
                await conn.executemany(self._insert, rows)
        elif self._db_type == "mysql":
            await conn.begin()
            async with conn.cursor() as cursor:
                await cursor.executemany(self._insert, rows)
            await conn.commit()
        else:
            await self._run(lambda: self._sqlite_executemany(rows))

    def _sqlite_executemany(self, rows: list[Any]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany(self._insert, rows)
        self._conn.execute("COMMIT")

    async def copy(self, rows: list[Any]) -> None:
        async with self._conn.transaction():
            await self._conn.copy_records_to_table("trades", records=rows, columns=_COLUMNS)

    async def close(self) -> None:
        if self._db_type == "postgres":
            await self._conn.close()
        elif self._db_type == "mysql":
            self._conn.close()
        else:
            await self._run(self._conn.close)
        self._thread.shutdown()


async def _saves(
    db_type: DbType, url: str, rows: int, batch: int, rounds: int
) -> dict[str, list[float]]:
    """Rows/s of each way of writing ``rows`` new trades, per round: the repository's
    ``save_fills``, SQLAlchemy Core ``executemany`` and the driver's own.

    The contenders take turns batch by batch (in an order that rotates), so a busy moment
    of the machine falls on all of them alike; each round writes fresh trade ids, and every
    contender's input is made before its clock starts."""
    repo = SqlRepository(create_engine_for(db_type, url), "simulated")
    await repo.start()
    core = create_engine_for(db_type, url)
    driver = _Driver(db_type, url)
    await driver.open()
    contenders: dict[str, tuple[_Write, Callable[[list[Fill]], list[Any]]]] = {
        "repo": (repo.save_fills, list),
        "core": (lambda chunk: _raw_insert(core, chunk), _raw_rows),
        "driver": (driver.executemany, lambda chunk: _driver_rows(chunk, db_type)),
    }
    if db_type == "postgres":
        contenders["copy"] = (driver.copy, lambda chunk: _driver_rows(chunk, db_type))
    names = list(contenders)
    next_id = iter(range(1_000_000, 1_000_000_000, rows))
    figures: dict[str, list[float]] = {name: [] for name in names}
    try:
        for write, make in contenders.values():  # warm-up: caches, pools, files
            await write(make(_fills(next(next_id), batch)))
        for _ in range(rounds):
            batches = {}
            for name, (_write, make) in contenders.items():
                first = next(next_id)
                batches[name] = [make(_fills(first + i, batch)) for i in range(0, rows, batch)]
            spent = dict.fromkeys(names, 0.0)
            for n in range(len(batches["repo"])):
                for name in names[n % len(names) :] + names[: n % len(names)]:
                    started = time.perf_counter()
                    await contenders[name][0](batches[name][n])
                    spent[name] += time.perf_counter() - started
            for name in names:
                figures[name].append(rows / spent[name])
    finally:
        await driver.close()
        await repo.close()
        if isinstance(core, AsyncEngine):
            await core.dispose()
        else:
            core.dispose()
    return figures


async def _replays(
    db_type: DbType, url: str, journal: Path, trades: int, rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds to load a journal of ``trades`` buffered trades (as a start after a crash
    does) and seconds to replay them from memory into the database (as the end of an
    outage does, the writes being held in memory too), per round."""
    repo = SqlRepository(create_engine_for(db_type, url), "simulated")
    await repo.start()
    loads: list[float] = []
    replays: list[float] = []
    try:
        for n in range(rounds):
            await asyncio.to_thread(_write_journal, journal, trades, 3_000_000 + n * trades)
            dead = DeadLetters(dead_letter_path(journal))
            pending = PendingWrites(Journal(journal, dead), capacity=max(trades, 1))
            replayer = Replayer(repo, pending, dead, retry_interval=3600)
            started = time.perf_counter()
            await pending.open()
            loaded = time.perf_counter()
            replayed = await replayer.flush()
            replays.append(time.perf_counter() - loaded)
            loads.append(loaded - started)
            pending.close()
            assert replayed == trades and pending.count == 0, (replayed, pending.count)
    finally:
        await repo.close()
    return loads, replays


async def _backend_figures(
    db_type: DbType, url: str, journal: Path, rows: int, batch: int, replay: int, rounds: int
) -> dict[str, float]:
    saves = await _saves(db_type, url, rows, batch, rounds)
    # a replay is one short measurement: more rounds of it for a median as steady
    loads, replays = await _replays(db_type, url, journal, replay, 2 * rounds - 1)
    out: dict[str, float] = {}
    for name, samples in saves.items():
        out[f"{name}_rows_per_s"], out[f"{name}_spread"] = median_spread(samples)
    # the repository against each baseline of the same round: paired, so a slow patch of the
    # machine slows both sides of a ratio
    for name in saves:
        if name != "repo":
            paired = [r / b for r, b in zip(saves["repo"], saves[name], strict=True)]
            out[f"repo_vs_{name}"], out[f"repo_vs_{name}_spread"] = median_spread(paired)
    out["replay_s"], out["replay_spread"] = median_spread(replays)
    out["journal_load_s"], out["journal_load_spread"] = median_spread(loads)
    out["replay_trades"] = float(replay)
    out["rounds"] = float(rounds)
    return out


def _write_journal(journal: Path, trades: int, first: int = 3_000_000) -> None:
    """A journal as an outage leaves it: one record per ``save_fill``."""
    journal.unlink(missing_ok=True)
    writer = Journal(journal, DeadLetters(dead_letter_path(journal)))
    writer.open()
    writer.append([Record(n + 1, "fills", fills=(_fill(first + n),)) for n in range(trades)])
    writer.close()


def measure_storage_backends(
    rows: int = 10_000, batch: int = 500, replay: int = 10_000, rounds: int = 5
) -> dict[str, dict[str, float]]:
    """Per backend (SQLite, and PostgreSQL and MariaDB where their binaries exist), each
    figure the median of ``rounds`` rounds with its spread (``<figure>_spread``: max minus
    min over the median):

    - ``repo_rows_per_s``: batched ``save_fills`` through the repository, ``batch`` rows a
      call; ``core_rows_per_s``: SQLAlchemy Core ``executemany`` of a plain INSERT of the
      same rows; ``driver_rows_per_s``: the driver's own ``executemany`` of it, without
      SQLAlchemy (the floor); ``copy_rows_per_s`` (PostgreSQL): asyncpg's
      ``copy_records_to_table``. They take turns batch by batch;
    - ``repo_vs_<baseline>``: the repository's rows/s over the baseline's, round by round;
    - ``replay_s`` (median of ``2 * rounds - 1`` rounds): seconds to replay ``replay``
      buffered trades held in memory (one ``save_fill`` each, as an outage leaves them)
      into the database; ``journal_load_s``: seconds to load them from the journal first
      (a start after a crash).
    """
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
                        _backend_figures(db_type, url, journal, rows, batch, replay, rounds)
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
