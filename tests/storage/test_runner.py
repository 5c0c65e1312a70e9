"""How repository transactions run: SQLite's database thread, cancellation, the async
engine path the servers use, and the statements the trading hot path costs."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, Engine, event, insert, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from quantmesh.errors import StorageError, StorageUnavailable
from quantmesh.grid.state import GridState, LevelState
from quantmesh.observability.metrics import Metrics
from quantmesh.storage import models
from quantmesh.storage import runner as runner_module
from quantmesh.storage.base import TradeFilter
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository
from quantmesh.storage.runner import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    RETRIES,
    THREAD_NAME_PREFIX,
    AsyncRunner,
    ThreadRunner,
    backoff,
)

from .conftest import SQLITE_ONLY, RepoFactory
from .support import SYMBOL, fill, order, round_trip

WAIT = 5.0  # seconds any step may take before the test gives up

_probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


def sqlite_engine(repo: SqlRepository) -> Engine:
    engine = repo._engine
    assert isinstance(engine, Engine), "a SQLite-only test ran on another backend"
    assert engine.dialect.name == "sqlite", "a SQLite-only test ran on another backend"
    return engine


class Reached:
    """Set from the database thread, awaited on the event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        async with asyncio.timeout(WAIT):
            await self._event.wait()


@pytest.fixture
async def blocked(repo: SqlRepository) -> AsyncIterator[threading.Event]:
    """Holds the database thread busy until the event is set (at the latest at the end)."""
    sqlite_engine(repo)  # only SQLite has one thread to block
    started, release = Reached(), threading.Event()

    def hold(_conn: Connection) -> None:
        started.set()
        release.wait(WAIT)

    holder = asyncio.create_task(repo._runner.run("hold", hold, write=False))
    await started.wait()
    try:
        yield release
    finally:
        release.set()
        await holder


# --- the database thread --------------------------------------------------------------------


async def test_sqlite_runs_every_transaction_on_one_thread_that_close_ends(
    tmp_path: Path,
) -> None:
    repo = SqlRepository(create_engine_for("sqlite", str(tmp_path / "q.db")), "binance")
    assert isinstance(repo._runner, ThreadRunner)
    seen: set[threading.Thread] = set()
    event.listen(
        sqlite_engine(repo),
        "before_cursor_execute",
        lambda *_: seen.add(threading.current_thread()),
    )
    await repo.start()
    await repo.init_grid(SYMBOL, Decimal(100))
    await asyncio.gather(*(repo.save_order(order(f"c{n}")) for n in range(5)))
    assert len(await repo.get_open_orders(SYMBOL)) == 5
    (thread,) = seen
    assert thread is not threading.current_thread()
    assert thread.name.startswith(THREAD_NAME_PREFIX)

    await repo.close()
    assert not thread.is_alive()
    await repo.close()  # twice is harmless


async def test_a_closed_repository_refuses_work_naming_the_operation(
    repo: SqlRepository,
) -> None:
    await repo.close()
    with pytest.raises(StorageError, match=r"save_order.*closed"):
        await repo.save_orders([order()])


async def test_the_callers_context_variables_reach_the_database_thread(
    repo: SqlRepository,
) -> None:
    _probe.set("from the caller")
    assert await repo._runner.run("probe", lambda _conn: _probe.get(), write=False) == (
        "from the caller"
    )


async def test_a_failed_transaction_writes_nothing(repo: SqlRepository) -> None:
    grid = {
        "exchange": "binance",
        "symbol": SYMBOL,
        "anchor": Decimal(100),
        "fence": 0,
        "updated_at": 0.0,
    }

    def broken(conn: Connection) -> None:
        conn.execute(insert(models.grids), [grid])
        conn.execute(insert(models.grids), [grid])  # the unique key refuses it

    with pytest.raises(StorageError, match=r"broken failed: (IntegrityError|UniqueViolation)"):
        await repo._runner.run("broken", broken, write=True)
    assert await repo.load_grid(SYMBOL) is None

    def fails(conn: Connection) -> None:
        conn.execute(insert(models.grids), [grid])
        raise ValueError("not a database error")

    with pytest.raises(ValueError, match="not a database error"):
        await repo._runner.run("fails", fails, write=True)
    assert await repo.load_grid(SYMBOL) is None


@SQLITE_ONLY
async def test_sqlite_write_transactions_hold_the_write_lock_from_their_start(
    repo: SqlRepository,
) -> None:
    path = sqlite_engine(repo).url.database
    assert path is not None

    def other_writer_can_begin(_conn: Connection) -> bool:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return False
        finally:
            other.close()

    # nothing written yet: a read-then-write transaction cannot be overtaken
    assert await repo._runner.run("w", other_writer_can_begin, write=True) is False
    assert await repo._runner.run("r", other_writer_can_begin, write=False) is True


# --- cancellation ---------------------------------------------------------------------------


@SQLITE_ONLY
async def test_a_write_cancelled_while_it_runs_still_commits_all_of_it(
    repo: SqlRepository,
) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    await repo.save_order(order("s1", side="sell"))
    inside, release = Reached(), threading.Event()

    def pause_at_fills(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO trades"):
            inside.set()
            release.wait(WAIT)

    event.listen(sqlite_engine(repo), "before_cursor_execute", pause_at_fills)
    level = LevelState(0, Decimal(0), Decimal(0), 1)
    sold = order("s1", side="sell", status="filled", filled="0.3")
    write = asyncio.create_task(
        repo.record_execution(sold, [fill("t1", side="sell")], [level], [round_trip()], fence=3)
    )
    await inside.wait()
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    release.set()

    # queued behind the cancelled write, so these see what it did
    assert await repo.get_order("s1") == sold
    assert [t.trade_id for t in await repo.get_trades(TradeFilter())] == ["t1"]
    assert await repo.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {0: level}, 3)


@SQLITE_ONLY
async def test_a_write_cancelled_while_queued_never_runs(
    repo: SqlRepository, blocked: threading.Event
) -> None:
    queued = asyncio.create_task(repo.save_order(order("c1")))
    await asyncio.sleep(0)  # handed to the (busy) database thread
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    blocked.set()
    assert await repo.get_order("c1") is None


# --- the async engine path (PostgreSQL, MySQL), driven here through aiosqlite ------------------


@pytest.fixture
async def async_repo(tmp_path: Path) -> AsyncIterator[SqlRepository]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    repo = SqlRepository(engine, "binance")
    assert isinstance(repo._runner, AsyncRunner)
    await repo.start()
    yield repo
    await repo.close()


async def test_the_async_engine_path_writes_and_reads_alike(async_repo: SqlRepository) -> None:
    repo = async_repo
    await repo.init_grid(SYMBOL, Decimal(100))
    await repo.save_orders([order("a"), order("a", filled="0.1", updated_at=1001.0)])
    a = await repo.get_order("a")
    assert a is not None
    assert (a.status, a.filled) == ("open", Decimal("0.1"))

    level = LevelState(0, Decimal("0.3"), Decimal(30), 1)
    bought = order("b", status="filled", filled="0.3")  # filled at once: never saved before
    assert await repo.record_execution(bought, [fill("t1", client_order_id="b")], [level], [], 1)
    assert await repo.get_order("b") == bought
    assert await repo.known_trade_ids(SYMBOL, ["t1", "t2"]) == {"t1"}
    assert await repo.record_execution(bought, [], [], [], fence=0) is False
    assert await repo.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {0: level}, 1)
    (summary,) = await repo.summaries()
    assert (summary.inventory, summary.open_orders) == (Decimal("0.3"), 1)


async def test_the_async_engine_path_maps_errors(async_repo: SqlRepository) -> None:
    with pytest.raises(StorageError, match="not initialised"):
        await async_repo.save_levels(SYMBOL, [], fence=1)

    def broken(conn: Connection) -> None:
        conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(StorageError, match="broken failed: OperationalError"):
        await async_repo._runner.run("broken", broken, write=False)


# --- what the hot path costs ------------------------------------------------------------------


class Statements:
    """The SQL statements one engine sends, by their first words."""

    def __init__(self, engine: Engine) -> None:
        self.sent: list[str] = []
        event.listen(engine, "before_cursor_execute", self.on_execute)

    def on_execute(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split()
        if words[0] == "SELECT":
            self.sent.append("SELECT " + words[words.index("FROM") + 1])
        elif words[0] in ("INSERT", "UPDATE"):
            self.sent.append(" ".join(words[: 3 if words[0] == "INSERT" else 2]))
        else:
            self.sent.append(" ".join(words))

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.sent.clear()
        yield self.sent


@SQLITE_ONLY
async def test_record_execution_of_a_stored_order_costs_five_statements(
    repo: SqlRepository,
) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    await repo.save_order(order("c1"))
    statements = Statements(sqlite_engine(repo))
    level = LevelState(0, Decimal("0.3"), Decimal(30), 1)

    with statements.counting() as sent:
        done = order("c1", status="filled", filled="0.3", updated_at=1002.0)
        assert await repo.record_execution(done, [fill("t1")], [level], [], fence=1)
    assert sent == [
        "BEGIN IMMEDIATE",
        "UPDATE grids",
        "SELECT orders",
        "UPDATE orders",
        "INSERT INTO trades",
        "INSERT INTO grid_levels",
    ]
    with statements.counting() as sent:  # nothing new: no order update, no fills
        assert await repo.record_execution(done, [], [level], [], fence=1)
    assert sent == ["BEGIN IMMEDIATE", "UPDATE grids", "SELECT orders", "INSERT INTO grid_levels"]


@SQLITE_ONLY
async def test_saving_a_new_order_costs_a_select_and_an_insert(repo: SqlRepository) -> None:
    statements = Statements(sqlite_engine(repo))
    with statements.counting() as sent:
        await repo.save_order(order("c1"))
    assert sent == ["BEGIN IMMEDIATE", "SELECT orders", "INSERT INTO orders"]
    with statements.counting() as sent:
        await repo.save_order(order("c1"))  # unchanged: read only
    assert sent == ["BEGIN IMMEDIATE", "SELECT orders"]


@SQLITE_ONLY
async def test_known_trade_ids_and_last_price_cost_one_statement(repo: SqlRepository) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    statements = Statements(sqlite_engine(repo))
    with statements.counting() as sent:
        assert await repo.known_trade_ids(SYMBOL, ["t1", "t2"]) == set()
        await repo.save_last_price(SYMBOL, Decimal(101), 1.0)
    assert sent == ["SELECT trades", "BEGIN IMMEDIATE", "UPDATE grids"]


@SQLITE_ONLY
async def test_many_trade_ids_are_read_in_chunks(make_repo: RepoFactory) -> None:
    repo = await make_repo()
    await repo.init_grid(SYMBOL, Decimal(100))
    stored = [fill(f"t{n}") for n in range(0, 1200, 2)]
    assert await repo.record_batch(SYMBOL, [], stored, [], [], fence=1)  # applied
    statements = Statements(sqlite_engine(repo))
    with statements.counting() as sent:
        known = await repo.known_trade_ids(SYMBOL, [f"t{n}" for n in range(1200)])
    assert known == {f"t{n}" for n in range(0, 1200, 2)}
    assert sent == ["SELECT trades"] * 3


# --- lost lock conflicts (deadlock victims) on the async engine path --------------------------


class PyMySQLError(Exception):
    """Stands in for pymysql's errors, which carry the server's error code first."""


def deadlock() -> OperationalError:
    return OperationalError(
        "INSERT INTO orders", {}, PyMySQLError(1213, "Deadlock found when trying to get lock")
    )


class LosesDeadlocks:
    """A transaction the server picks as the deadlock victim ``times`` times."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.runs = 0

    def __call__(self, conn: Connection) -> str:
        self.runs += 1
        conn.execute(text("SELECT 1"))
        if self.left:
            self.left -= 1
            raise deadlock()
        return "committed"


@pytest.fixture
async def async_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncRunner, Metrics, list[int]]]:
    """An ``AsyncRunner`` with metrics whose backoff records the attempts and waits 0 s."""
    waits: list[int] = []

    def no_wait(attempt: int) -> float:
        waits.append(attempt)
        return 0.0

    monkeypatch.setattr(runner_module, "backoff", no_wait)
    metrics = Metrics(CollectorRegistry())
    runner = AsyncRunner(
        create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"), metrics.db
    )
    yield runner, metrics, waits
    await runner.close()


def errors(metrics: Metrics, operation: str, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "quantmesh_db_errors_total", {"operation": operation, "error": kind}
    )
    return value or 0.0


async def test_a_deadlock_victim_is_run_again_after_a_backoff(
    async_runner: tuple[AsyncRunner, Metrics, list[int]],
) -> None:
    runner, metrics, waits = async_runner
    transaction = LosesDeadlocks(3)
    assert await runner.run("save_orders", transaction, write=True) == "committed"
    assert transaction.runs == 4
    assert waits == [1, 2, 3]
    assert errors(metrics, "save_orders", "retried") == 3
    assert errors(metrics, "save_orders", "deadlock") == 0


async def test_a_transaction_losing_every_attempt_is_unavailable_not_an_error(
    async_runner: tuple[AsyncRunner, Metrics, list[int]],
) -> None:
    """``StorageUnavailable`` is what the write buffer journals and replays later."""
    runner, metrics, waits = async_runner
    transaction = LosesDeadlocks(RETRIES)
    with pytest.raises(StorageUnavailable, match=r"save_orders: database busy .*1213"):
        await runner.run("save_orders", transaction, write=True)
    assert transaction.runs == RETRIES
    assert waits == list(range(1, RETRIES))
    assert errors(metrics, "save_orders", "retried") == RETRIES - 1
    assert errors(metrics, "save_orders", "deadlock") == 1
    assert errors(metrics, "save_orders", "unavailable") == 0


def test_the_backoff_is_jittered_grows_and_is_bounded() -> None:
    ceilings = [min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (n - 1)) for n in range(1, RETRIES)]
    assert ceilings == sorted(ceilings) and ceilings[-1] == BACKOFF_CAP
    assert ceilings[0] == BACKOFF_BASE
    assert sum(ceilings) < 1.0  # a doomed write reaches the write buffer within a second
    for attempt, ceiling in enumerate(ceilings, start=1):
        delays = [backoff(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered: colliding writers spread apart
