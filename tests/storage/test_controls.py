"""``SqlControlStore``: desired state and control audit on SQLite, PostgreSQL and MariaDB.

Stores made by ``make_store`` share one database, each on an engine and runner of its own
(like separate instances). The outage tests stop or kill a server of their own; the
schema tests upgrade from revision 0003 and copy between all three databases.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.control.board import AuditEntry, ControlBoard, ControlStore
from quantmesh.control.desired import ACTIONS, Action, Desired, desired_after
from quantmesh.errors import StorageError, StorageRejected, StorageUnavailable
from quantmesh.grid.state import LevelState
from quantmesh.storage import migrate, models
from quantmesh.storage.controls import SqlControlStore
from quantmesh.storage.copy import copy_database
from quantmesh.storage.engine import DbType, create_engine_for
from quantmesh.storage.repository import SqlRepository
from quantmesh.storage.runner import Runner, runner_for
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.support import free_port

from .conftest import SQLITE_ONLY, Backend, RepoFactory, fresh_backend
from .support import SYMBOL, fill, order

OTHER = "BTC/USDT"
PASSWORD = "s3cr3t-pw"
# every character set the HTTP layer may let through, at the column's full width
WIDE_REASON = ("maintenance: Wartung, 保守, обслуживание 🛠 " * 40)[: models.REASON_LEN]

StoreFactory = Callable[..., Awaitable[SqlControlStore]]


def entry(
    action: Action = "pause",
    *,
    symbol: str = SYMBOL,
    at: float = 1000.0,
    reason: str = "exchange maintenance",
    actor: str = "alice",
    instance: str = "qm-1",
) -> AuditEntry:
    return AuditEntry(
        symbol, action, desired_after(action, reason=reason, actor=actor, at=at), instance
    )


def engine_of(backend: Backend) -> Engine | AsyncEngine:
    return create_engine_for(backend.db_type, backend.url)


@pytest.fixture
async def make_store(backend: Backend) -> AsyncIterator[StoreFactory]:
    """Stores on one shared database migrated to the head, each on a runner of its own
    (an ``engine`` handed in is used for it); every runner closed at the end."""
    runners: list[Runner] = []

    async def factory(
        exchange: str = "binance", engine: Engine | AsyncEngine | None = None
    ) -> SqlControlStore:
        runner = runner_for(engine or engine_of(backend))
        runners.append(runner)
        await runner.run("migrate", migrate.upgrade, write=True)
        return SqlControlStore(runner, exchange)

    yield factory
    for runner in reversed(runners):
        await runner.close()


def on_audit_insert(engine: Engine | AsyncEngine, act: Callable[[], None]) -> None:
    """Call ``act`` just before ``engine`` sends an insert into ``control_audit`` (the
    symbol's state is written by then, in the same transaction)."""
    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CONTROL_AUDIT"):
            act()

    event.listen(target, "before_cursor_execute", before)


# --- state and audit ------------------------------------------------------------------------


async def test_every_action_is_stored_and_read_back_by_another_instance(
    make_store: StoreFactory,
) -> None:
    store, other = await make_store(), await make_store()
    assert await store.load_controls() == {}
    expected: dict[str, Desired] = {}
    for n, action in enumerate(ACTIONS):
        saved = entry(action, symbol=f"S{n}/USDT", at=1000.5 + n, reason=WIDE_REASON)
        await store.save_control(saved)
        expected[saved.symbol] = saved.desired
    assert await store.load_controls() == expected
    assert await other.load_controls() == expected  # another engine: what was committed
    assert {desired.mode for desired in expected.values()} == {
        "active",
        "paused",
        "stop_buys",
        "liquidate",
    }
    assert any(desired.cancel_orders for desired in expected.values())


async def test_the_last_action_saved_is_the_state_and_the_audit_keeps_each(
    make_store: StoreFactory,
) -> None:
    """Saving order decides, not the ``at`` clock: an instance whose clock is behind still
    sets the state, and its entry is the newest."""
    store, other = await make_store(), await make_store()
    first = entry("cancel-all", at=2000.0)
    second = entry("resume", at=1500.0, actor="bob", instance="qm-2")
    await store.save_control(first)
    await other.save_control(second)
    assert await store.load_controls() == {SYMBOL: second.desired}
    assert await store.control_audit(SYMBOL, 10) == [second, first]


async def test_the_audit_is_newest_first_per_symbol_and_limited(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    saved = [
        entry("pause", at=1.0),
        entry("stop-buys", symbol=OTHER, at=2.0),
        entry("cancel-all", at=3.0),
        entry("resume", symbol=OTHER, at=4.0),
        entry("resume", at=5.0),
    ]
    for one in saved:
        await store.save_control(one)
    newest_first = saved[::-1]
    assert await store.control_audit(None, 100) == newest_first
    assert await store.control_audit(None, 2) == newest_first[:2]
    assert await store.control_audit(SYMBOL, 100) == [saved[4], saved[2], saved[0]]
    assert await store.control_audit(OTHER, 1) == [saved[3]]
    assert await store.control_audit("XRP/USDT", 10) == []
    assert await store.control_audit(None, 0) == []
    with pytest.raises(ValueError, match="negative"):
        await store.control_audit(None, -1)


async def test_two_exchanges_are_kept_apart(make_store: StoreFactory) -> None:
    binance, okx = await make_store("binance"), await make_store("okx")
    on_binance, on_okx = entry("pause"), entry("stop-buys", actor="bob")
    await binance.save_control(on_binance)
    await okx.save_control(on_okx)
    assert await binance.load_controls() == {SYMBOL: on_binance.desired}
    assert await okx.load_controls() == {SYMBOL: on_okx.desired}
    assert await binance.control_audit(None, 10) == [on_binance]
    assert await okx.control_audit(SYMBOL, 10) == [on_okx]


async def test_a_value_a_column_cannot_hold_is_refused_whole(make_store: StoreFactory) -> None:
    """Nothing is cut short, on any database: a reason over ``REASON_LEN`` is refused and
    neither the state nor the audit is written."""
    store = await make_store()
    with pytest.raises(StorageRejected, match=r"reason is longer than 1000 characters"):
        await store.save_control(entry(reason="x" * (models.REASON_LEN + 1)))
    assert await store.load_controls() == {}
    assert await store.control_audit(None, 10) == []


async def test_an_unknown_stored_mode_is_a_storage_error_naming_it(
    make_store: StoreFactory,
) -> None:
    """A mode a newer version wrote: this one cannot act on it, and says so."""
    store = await make_store()
    await store.save_control(entry("pause"))

    def newer(conn: Connection) -> None:
        conn.execute(models.symbol_controls.update().values(mode="sell_only"))

    await store._runner.run("test", newer, write=True)
    with pytest.raises(StorageError, match="stored control mode 'sell_only' is unknown"):
        await store.load_controls()


def test_an_exchange_name_the_tables_cannot_hold_is_refused(tmp_path: Path) -> None:
    runner = runner_for(create_engine_for("sqlite", str(tmp_path / "q.db")))
    with pytest.raises(ValueError, match="1 to 32 characters"):
        SqlControlStore(runner, "x" * 33)


async def test_a_store_on_the_repositorys_runner_works_beside_it(
    make_repo: RepoFactory,
) -> None:
    """The wiring for one database: the repository's runner (SQLite's one writer thread,
    the servers' one pool), the schema migrated by the repository's start; a control
    board on one instance records, the board of another reads it."""
    repo, other = await make_repo(), await make_repo()
    store: ControlStore = SqlControlStore(repo._runner, repo.exchange)
    here = ControlBoard(store, instance="qm-1", refresh_interval=1.0, clock=lambda: 1000.0)
    there = ControlBoard(
        SqlControlStore(other._runner, other.exchange), instance="qm-2", refresh_interval=1.0
    )
    assert await here.refresh() and await there.refresh()
    await repo.save_order(order("c1"))
    paused = await here.apply(SYMBOL, "pause", reason="exchange maintenance", actor="alice")
    assert await there.refresh()
    assert there.get(SYMBOL) == paused == entry("pause").desired
    assert await there.audit(SYMBOL, 10) == [entry("pause", instance="qm-1")]
    assert await repo.get_order("c1") == order("c1")


# --- failures -------------------------------------------------------------------------------


async def test_a_failure_between_state_and_audit_stores_neither(
    backend: Backend, make_store: StoreFactory
) -> None:
    """One transaction: the state row written before the audit insert failed is rolled
    back with it, and the error is a connectivity failure."""
    engine = engine_of(backend)
    store = await make_store(engine=engine)
    before = entry("pause")
    await store.save_control(before)

    def fail() -> None:
        raise OSError("disk I/O error")

    on_audit_insert(engine, fail)
    with pytest.raises(StorageUnavailable, match="save_control: database unavailable"):
        await store.save_control(entry("cancel-all", at=2000.0))
    reader = await make_store()
    assert await reader.load_controls() == {SYMBOL: before.desired}
    assert await reader.control_audit(None, 10) == [before]


@pytest.mark.parametrize("server_kind", ["postgres", "mysql"])
async def test_a_save_refused_by_a_dead_server_stores_neither_state_nor_audit(
    server_kind: str, request: pytest.FixtureRequest
) -> None:
    """Killed between the state row and the audit row, then stopped before a save: both
    saves raise ``StorageUnavailable`` in one line; once the server is back, neither is
    there, and the store saves again on the same engine."""
    server: PostgresServer | MariaDBServer
    db_type: DbType
    if server_kind == "postgres":
        server, db_type = request.getfixturevalue("own_postgres"), "postgres"
    else:
        server, db_type = request.getfixturevalue("own_mariadb"), "mysql"
    database = server.create_database("qm")
    durable_commits(server, database)
    engine = create_engine_for(db_type, server.url(database))
    runner = runner_for(engine, timeout=20)
    try:
        await runner.run("migrate", migrate.upgrade, write=True)
        store = SqlControlStore(runner, "binance")
        before = entry("pause")
        await store.save_control(before)
        killed = False

        def kill_once() -> None:
            nonlocal killed
            if not killed:
                killed = True
                server.kill()

        on_audit_insert(engine, kill_once)
        for at in (2000.0, 3000.0):  # killed mid-transaction, then down
            with pytest.raises(StorageUnavailable, match="save_control: database") as info:
                await store.save_control(entry("cancel-all", at=at))
            assert "\n" not in str(info.value)
        assert killed
        await asyncio.to_thread(server.start)
        assert await store.load_controls() == {SYMBOL: before.desired}
        assert await store.control_audit(None, 10) == [before]
        after = entry("resume", at=4000.0)
        await store.save_control(after)
        assert await store.control_audit(SYMBOL, 10) == [after, before]
    finally:
        await runner.close()


def durable_commits(server: PostgresServer | MariaDBServer, database: str) -> None:
    """The test servers trade durability for speed (a commit may be lost with the server
    process); a test that kills one needs what it committed before to survive."""
    if isinstance(server, PostgresServer):
        server.query(f"ALTER DATABASE {database} SET synchronous_commit = on")
    else:
        server.query("SET GLOBAL innodb_flush_log_at_trx_commit = 1")


@SQLITE_ONLY
async def test_a_save_while_another_process_holds_sqlites_write_lock_is_unavailable(
    backend: Backend, make_store: StoreFactory
) -> None:
    """SQLite's outage: the write lock held past the busy timeout (5 s)."""
    store = await make_store()
    holder = sqlite3.connect(backend.url, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageUnavailable, match="save_control: database unavailable"):
            await store.save_control(entry("pause"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await store.load_controls() == {}
    assert await store.control_audit(None, 10) == []


@pytest.mark.parametrize(
    ("db_type", "scheme"), [("postgres", "postgresql+asyncpg"), ("mysql", "mysql+aiomysql")]
)
async def test_an_unreachable_server_is_unavailable_in_one_line_without_the_password(
    db_type: DbType, scheme: str
) -> None:
    url = f"{scheme}://quantmesh:{PASSWORD}@127.0.0.1:{free_port()}/quantmesh"
    runner = runner_for(create_engine_for(db_type, url), timeout=20)
    store = SqlControlStore(runner, "binance")
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.save_control(entry()),
            store.load_controls,
        ]
        for call in calls:
            with pytest.raises(StorageUnavailable) as info:
                await call()
            assert "\n" not in str(info.value)
            assert PASSWORD not in str(info.value)
    finally:
        await runner.close()


# --- schema -------------------------------------------------------------------------------


async def test_upgrading_a_database_with_data_from_0003_adds_the_control_tables(
    backend: Backend,
) -> None:
    repo = SqlRepository(engine_of(backend), "binance")
    try:
        await repo._runner.run("test", lambda conn: migrate.upgrade(conn, "0003"), write=True)
        await repo.init_grid(SYMBOL, Decimal(100))
        level = LevelState(0, Decimal("0.1"), Decimal(10), 1)
        filled = order("c1", status="filled", filled="0.1")
        assert await repo.record_execution(filled, [fill("t1")], [level], [], fence=1)
        await repo.start()  # upgrades to the head
        head = await repo._runner.run("test", migrate.current_revision, write=False)
        assert head == migrate.head_revision() == "0006"
        assert await repo._runner.run("test", migrate.drift, write=False) == []
        assert await repo.get_order("c1") == filled
        assert await repo.known_trade_ids(SYMBOL, ["t1"]) == {"t1"}
        grid = await repo.load_grid(SYMBOL)
        assert grid is not None and grid.levels == {0: level} and grid.fence == 1
        store = SqlControlStore(repo._runner, "binance")
        assert await store.load_controls() == {}
        await store.save_control(entry("stop-buys"))
        assert await store.control_audit(None, 10) == [entry("stop-buys")]
    finally:
        await repo.close()


async def test_downgrading_to_0003_drops_only_the_later_tables(backend: Backend) -> None:
    """0006's leases, 0005's risk peaks and 0004's control tables go; the rest stays."""
    from alembic import command

    repo = SqlRepository(engine_of(backend), "binance")
    try:
        await repo.start()
        await repo.save_order(order("c1"))
        await SqlControlStore(repo._runner, "binance").save_control(entry())

        def down(conn: Connection) -> None:
            command.downgrade(migrate.alembic_config(conn), "0003")

        await repo._runner.run("test", down, write=True)
        tables = await repo._runner.run(
            "test", lambda conn: set(inspect(conn).get_table_names()), write=False
        )
        assert tables == {*models.metadata.tables, "alembic_version"} - {
            "symbol_controls",
            "control_audit",
            "risk_peaks",
            "lock_leases",
        }
        assert await repo.get_order("c1") == order("c1")
    finally:
        await repo.close()


async def test_db_copy_carries_state_and_audit_and_the_target_numbers_on(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SQLite -> PostgreSQL -> MariaDB, the last run twice; the audit keeps its ids, and a
    new action on a target is numbered after them (PostgreSQL's sequence moved on)."""
    sqlite = fresh_backend(request, "sqlite", tmp_path)
    saved = [entry("pause", at=1.0), entry("stop-buys", symbol=OTHER, at=2.0)]
    saved += [entry("cancel-all", at=3.0), entry("resume", symbol=OTHER, at=4.0)]
    runner = runner_for(engine_of(sqlite))
    try:
        await runner.run("migrate", migrate.upgrade, write=True)
        source = SqlControlStore(runner, "binance")
        for one in saved:
            await source.save_control(one)
        controls = await source.load_controls()
    finally:
        await runner.close()

    postgres = fresh_backend(request, "postgres", tmp_path)
    mariadb = fresh_backend(request, "mysql", tmp_path)
    await copy_database(sqlite.url, postgres.url)
    await copy_database(postgres.url, mariadb.url)
    report = await copy_database(postgres.url, mariadb.url)  # run again: changes nothing
    assert report.counts["symbol_controls"] == 2
    assert report.counts["control_audit"] == 4
    for target in (postgres, mariadb):
        runner = runner_for(engine_of(target))
        try:
            store = SqlControlStore(runner, "binance")
            assert await store.load_controls() == controls
            assert await store.control_audit(None, 10) == saved[::-1]
            later = entry("pause", symbol=OTHER, at=5.0)
            await store.save_control(later)
            assert await store.control_audit(None, 2) == [later, saved[3]]

            def ids(conn: Connection) -> list[int]:
                return list(conn.scalars(text("SELECT id FROM control_audit ORDER BY id")))

            assert await runner.run("test", ids, write=False) == [1, 2, 3, 4, 5]
        finally:
            await runner.close()
