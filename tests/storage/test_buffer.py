"""The write buffer against real outages: servers stopped, connections cut, writers killed.

Every outage test writes more than 1,000 records while the database is away and checks
that each lands exactly once and in the order it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, event, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from quantmesh.errors import StorageUnavailable
from quantmesh.grid.state import GridState, LevelState
from quantmesh.observability.metrics import Metrics
from quantmesh.storage import runner as runner_module
from quantmesh.storage.base import ExecutionBatch, TradeFilter
from quantmesh.storage.buffer import BufferedRepository
from quantmesh.storage.engine import DbType, create_engine_for
from quantmesh.storage.journal import Journal, dead_letter_path
from quantmesh.storage.records import Record, encode
from quantmesh.storage.repository import SqlRepository
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import TcpProxy
from tests.support import FakeClock

from .conftest import BACKENDS, SERVER_BACKENDS, Backend, fresh_backend
from .support import SYMBOL, fill, order, round_trip

COUNT = 1200
WAIT = 20.0
ROOT = Path(__file__).resolve().parents[2]


def sql_repo(db_type: DbType, url: str, clock: FakeClock | None = None, **kw: Any) -> SqlRepository:
    engine = create_engine_for(db_type, url, connect_timeout=2, statement_timeout=5)
    return SqlRepository(engine, "binance", clock=clock or FakeClock(), **kw)


def buffered(
    db_type: DbType, url: str, journal: Path, *, metrics: Metrics | None = None, **kw: Any
) -> BufferedRepository:
    return BufferedRepository(
        sql_repo(db_type, url, metrics=metrics.db if metrics else None),
        journal,
        retry_interval=kw.pop("retry_interval", 0.1),
        metrics=metrics.db if metrics else None,
        **kw,
    )


async def drained(repo: BufferedRepository) -> None:
    """Wait until the replayer has emptied the buffer."""
    for _ in range(int(WAIT / 0.05)):
        if not repo.pending:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{repo.pending} writes still buffered after {WAIT} s")


async def stored_trade_ids(db_type: DbType, url: str) -> list[str]:
    repo = sql_repo(db_type, url)
    try:
        return [f.trade_id for f in await repo.get_trades(TradeFilter(limit=100_000))]
    finally:
        await repo.close()


async def write_mix(repo: BufferedRepository, count: int) -> None:
    """``count`` fills, with an order update every tenth, as a trader writes them."""
    for n in range(count):
        if n % 10 == 0:
            await repo.save_order(order(f"c{n}", status="filled", filled="0.1"))
        await repo.save_fill(fill(f"t{n:05d}", ts=1000.0 + n, client_order_id=f"c{n - n % 10}"))


def expected_ids(count: int) -> list[str]:
    return [f"t{n:05d}" for n in range(count)]


@dataclass
class Proxied:
    backend: Backend  # direct
    url: str  # through the proxy
    proxy: TcpProxy


@pytest.fixture(params=SERVER_BACKENDS)
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proxied]:
    backend = fresh_backend(request, request.param, tmp_path)
    direct = make_url(backend.url)
    assert direct.port is not None
    with TcpProxy("127.0.0.1", direct.port) as proxy:
        url = direct.set(port=proxy.port).render_as_string(hide_password=False)
        yield Proxied(backend, url, proxy)


@pytest.fixture
async def cut_repo(proxied: Proxied, tmp_path: Path) -> AsyncIterator[BufferedRepository]:
    """A started buffered repository whose database connection is then cut."""
    repo = buffered(proxied.backend.db_type, proxied.url, tmp_path / "journal.jsonl")
    await repo.start()
    await repo.init_grid(SYMBOL, Decimal(100))
    proxied.proxy.cut()
    yield repo
    proxied.proxy.heal()
    await repo.close()


# --- outages ----------------------------------------------------------------------------


async def test_a_cut_connection_loses_nothing_and_keeps_the_order(
    proxied: Proxied, cut_repo: BufferedRepository
) -> None:
    await write_mix(cut_repo, COUNT)
    assert cut_repo.pending == COUNT + COUNT // 10
    proxied.proxy.heal()
    await drained(cut_repo)
    ids = await stored_trade_ids(proxied.backend.db_type, proxied.backend.url)
    assert ids == expected_ids(COUNT)  # each exactly once, in the order written
    assert (await cut_repo.get_order("c10")) == order("c10", status="filled", filled="0.1")
    assert cut_repo.journal_path.stat().st_size == 0


async def test_a_silent_partition_times_out_and_loses_nothing(
    proxied: Proxied, tmp_path: Path
) -> None:
    """Black-holed connections answer nothing; the transaction timeout turns the hang into
    an outage the buffer handles."""
    inner = SqlRepository(
        create_engine_for(
            proxied.backend.db_type, proxied.url, connect_timeout=1, statement_timeout=1
        ),
        "binance",
        timeout=1.5,
    )
    repo = BufferedRepository(inner, tmp_path / "journal.jsonl", retry_interval=0.1)
    await repo.start()
    try:
        await repo.save_fill(fill("before"))
        proxied.proxy.blackhole()
        async with asyncio.timeout(10):
            await write_mix(repo, COUNT)
        assert repo.pending == COUNT + COUNT // 10
        proxied.proxy.heal()
        await drained(repo)
    finally:
        await repo.close()
    ids = await stored_trade_ids(proxied.backend.db_type, proxied.backend.url)
    assert ids == ["before", *expected_ids(COUNT)]


@pytest.mark.parametrize("server_kind", ["postgres", "mysql"])
async def test_a_stopped_server_loses_nothing_and_keeps_the_order(
    server_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: PostgresServer | MariaDBServer
    if server_kind == "postgres":
        server = request.getfixturevalue("own_postgres")
        db_type: DbType = "postgres"
    else:
        server = request.getfixturevalue("own_mariadb")
        db_type = "mysql"
    url = server.url(server.create_database("qm"))
    repo = buffered(db_type, url, tmp_path / "journal.jsonl")
    await repo.start()
    try:
        await repo.save_fill(fill("before"))
        await asyncio.to_thread(server.stop)
        await write_mix(repo, COUNT)
        with pytest.raises(StorageUnavailable, match="writes wait in the write buffer"):
            await repo.get_trades(TradeFilter())
        await asyncio.to_thread(server.start)
        await drained(repo)
    finally:
        await repo.close()
    assert await stored_trade_ids(db_type, url) == ["before", *expected_ids(COUNT)]


async def test_a_full_memory_buffer_spills_to_the_journal_only(
    proxied: Proxied, tmp_path: Path
) -> None:
    repo = buffered(proxied.backend.db_type, proxied.url, tmp_path / "j.jsonl", buffer_size=50)
    await repo.start()
    try:
        proxied.proxy.cut()
        for n in range(COUNT):
            await repo.save_fill(fill(f"t{n:05d}", ts=1000.0 + n))
        assert repo.memory_records == 50  # bounded
        assert repo.pending == COUNT  # nothing dropped
        lines = repo.journal_path.read_bytes().splitlines()
        assert len(lines) == COUNT
        proxied.proxy.heal()
        await drained(repo)
        assert repo.memory_records == 0
    finally:
        await repo.close()
    assert await stored_trade_ids(proxied.backend.db_type, proxied.backend.url) == expected_ids(
        COUNT
    )


async def test_reads_during_an_outage_raise_storage_unavailable(
    cut_repo: BufferedRepository,
) -> None:
    await cut_repo.save_order(order("c1"))  # buffered
    for read in (
        cut_repo.get_open_orders(SYMBOL),
        cut_repo.get_order("c1"),
        cut_repo.load_grid(SYMBOL),
        cut_repo.known_trade_ids(SYMBOL, ["t1"]),
        cut_repo.unapplied_order_ids(SYMBOL),
        cut_repo.summaries(),
    ):
        with pytest.raises(StorageUnavailable, match="1 writes wait"):
            await read


async def test_grid_writes_are_accepted_during_an_outage_and_a_stale_fence_keeps_the_fills(
    proxied: Proxied, cut_repo: BufferedRepository
) -> None:
    level = LevelState(0, Decimal("0.3"), Decimal(30), 1)
    bought = order("b1", status="filled", filled="0.3")
    bought_fill = fill("t1", client_order_id="b1")
    assert await cut_repo.record_execution(bought, [bought_fill], [level], [round_trip()], 1)
    assert await cut_repo.save_levels(SYMBOL, [level], 1)
    # meanwhile another instance took the grid over with a newer fence
    other = sql_repo(proxied.backend.db_type, proxied.backend.url)
    await other.start()
    assert await other.save_levels(SYMBOL, [], fence=5)
    proxied.proxy.heal()
    await drained(cut_repo)
    assert await other.get_order("b1") == bought  # the facts are kept
    # stored without their level: the new owner must apply them, not take them as applied
    assert await other.known_trade_ids(SYMBOL, ["t1"]) == set()
    assert await other.unapplied_order_ids(SYMBOL) == ["b1"]
    assert len(await other.get_round_trips(SYMBOL)) == 1
    grid = await other.load_grid(SYMBOL)
    assert grid is not None and grid.levels == {} and grid.fence == 5  # levels refused
    await other.close()
    dead = [json.loads(line) for line in cut_repo.dead_letter_path.read_text().splitlines()]
    assert [d["record"]["op"] for d in dead] == ["execution", "levels"]
    assert all("stale fence" in d["reason"] for d in dead)


async def test_a_batch_of_executions_is_buffered_as_one_and_replayed_in_sequence(
    proxied: Proxied, cut_repo: BufferedRepository
) -> None:
    """The trader's write-behind stores runs of executions with ``record_batch``."""
    placed = order("b1")
    bought = order("b1", status="filled", filled="0.3")
    level = LevelState(0, Decimal("0.3"), Decimal(30), 1)
    batch = [placed, bought]
    assert await cut_repo.record_batch(
        SYMBOL, batch, [fill("t1", client_order_id="b1")], [level], [], 1
    )
    assert cut_repo.pending == 1  # one record for the whole batch
    proxied.proxy.heal()
    await drained(cut_repo)
    assert await cut_repo.get_order("b1") == bought  # the updates applied in sequence
    assert await cut_repo.known_trade_ids(SYMBOL, ["t1"]) == {"t1"}
    grid = await cut_repo.load_grid(SYMBOL)
    assert grid is not None and grid.level(0).holding == Decimal("0.3")


async def test_a_group_of_symbols_is_buffered_a_record_per_batch_and_replayed(
    proxied: Proxied, tmp_path: Path
) -> None:
    """The traders' group commit stores several symbols' runs with ``record_batches``."""
    repo = buffered(proxied.backend.db_type, proxied.url, tmp_path / "journal.jsonl")
    await repo.start()
    try:
        symbols = (SYMBOL, "BTC/USDT")
        for symbol in symbols:
            await repo.init_grid(symbol, Decimal(100))
        proxied.proxy.cut()
        level = LevelState(0, Decimal("0.3"), Decimal(30), 1)
        batches = [
            ExecutionBatch(
                symbol,
                (order(f"b{n}", symbol=symbol, status="filled", filled="0.3"),),
                (fill(f"t{n}", symbol=symbol, client_order_id=f"b{n}"),),
                (level,),
                (),
                1,
            )
            for n, symbol in enumerate(symbols)
        ]
        assert await repo.record_batches(batches) == [True, True]
        assert repo.pending == 2  # a record per symbol, replayed as the trader's own
        proxied.proxy.heal()
        await drained(repo)
        for n, one in enumerate(batches):
            assert await repo.get_order(f"b{n}") == one.orders[0]
            assert await repo.known_trade_ids(one.symbol, [f"t{n}"]) == {f"t{n}"}
            grid = await repo.load_grid(one.symbol)
            assert grid is not None and grid.level(0) == level
    finally:
        proxied.proxy.heal()
        await repo.close()


@dataclass
class FormerOwner:
    """Instance A: a started buffered repository whose own link to the database the test
    cuts and heals; other instances reach the database directly (``backend``)."""

    repo: BufferedRepository
    backend: Backend
    cut: Callable[[], None]
    heal: Callable[[], None]


def sqlite_link(repo: SqlRepository) -> tuple[Callable[[], None], Callable[[], None]]:
    """Cut and heal one repository's SQLite link at the driver's edge (a file has no
    connection to cut): while cut, every statement of its engine fails as a dying disk
    does. Other engines on the same file are unaffected."""
    engine = repo._engine
    assert isinstance(engine, Engine)
    down = threading.Event()

    def fail(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if down.is_set():
            raise OperationalError(statement, {}, sqlite3.OperationalError("disk I/O error"))

    event.listen(engine, "before_cursor_execute", fail)
    return down.set, down.clear


@pytest.fixture(params=BACKENDS)
async def former_owner(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[FormerOwner]:
    backend = fresh_backend(request, request.param, tmp_path)
    journal = tmp_path / "journal.jsonl"
    with contextlib.ExitStack() as stack:
        if backend.db_type == "sqlite":
            repo = buffered("sqlite", backend.url, journal)
            cut, heal = sqlite_link(repo.inner)
        else:
            direct = make_url(backend.url)
            assert direct.port is not None
            proxy = stack.enter_context(TcpProxy("127.0.0.1", direct.port))
            url = direct.set(port=proxy.port).render_as_string(hide_password=False)
            repo = buffered(backend.db_type, url, journal)
            cut, heal = proxy.cut, proxy.heal
        await repo.start()
        try:
            yield FormerOwner(repo, backend, cut, heal)
        finally:
            heal()
            await repo.close()


async def test_a_former_owners_replay_under_a_stale_fence_leaves_its_fills_unapplied(
    former_owner: FormerOwner,
) -> None:
    """The double buy: A owns ETH/USDT and loses its database; its buy B-1.0 fills and
    the order, fills and level go to A's journal. B claims the grid with a higher fence
    and, while B is still starting, A's replay stores the facts and refuses the level.
    The stored fills must not read as applied, or B finds level -1 empty, takes the fills
    for known ones and buys B-1.0 again."""
    a = former_owner.repo
    await a.init_grid(SYMBOL, Decimal(100))
    assert await a.save_levels(SYMBOL, [], fence=1)  # A owns the grid
    former_owner.cut()
    bought = order(
        "B-1.0", price="99", amount="0.2", status="filled", filled="0.2", exchange_order_id="x1"
    )
    fills = [
        fill("t1", price="99", amount="0.15", client_order_id="B-1.0"),
        fill("t2", price="99", amount="0.05", client_order_id="B-1.0", ts=1001.0),
    ]
    level = LevelState(-1, Decimal("0.2"), Decimal("19.8"), 1)
    assert await a.record_execution(bought, fills, [level], [], fence=1)  # buffered
    assert a.pending == 1
    with pytest.raises(StorageUnavailable, match="1 writes wait"):
        await a.unapplied_order_ids(SYMBOL)

    # the symbol changes hands: B claims the grid with a higher fence
    db = former_owner.backend
    b = sql_repo(db.db_type, db.url)
    await b.start()
    try:
        assert await b.save_levels(SYMBOL, [], fence=2)
        former_owner.heal()
        await drained(a)  # A's replay: a stale fence, the facts kept

        assert await b.get_order("B-1.0") == bought  # stored as filled, same exchange id
        assert [f.trade_id for f in await b.get_trades(TradeFilter(symbol=SYMBOL))] == [
            "t1",
            "t2",
        ]
        assert await b.known_trade_ids(SYMBOL, ["t1", "t2"]) == set()
        assert await b.unapplied_order_ids(SYMBOL) == ["B-1.0"]
        assert await b.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {}, fence=2)
        (dead,) = [json.loads(line) for line in a.dead_letter_path.read_text().splitlines()]
        assert dead["record"]["op"] == "execution" and "stale fence" in dead["reason"]

        # B applies them under its own fence: known from now on, no longer listed
        assert await b.record_execution(bought, fills, [level], [], fence=2)
        assert await b.known_trade_ids(SYMBOL, ["t1", "t2"]) == {"t1", "t2"}
        assert await b.unapplied_order_ids(SYMBOL) == []
        assert await a.unapplied_order_ids(SYMBOL) == []  # A reads the database again
        assert await b.load_grid(SYMBOL) == GridState(SYMBOL, Decimal(100), {-1: level}, 2)
    finally:
        await b.close()


async def test_a_write_the_database_refuses_goes_to_the_dead_letter_file(
    proxied: Proxied, cut_repo: BufferedRepository
) -> None:
    await cut_repo.save_fill(fill("t1"))
    await cut_repo.save_fill(fill("t2", symbol="X" * 100))  # longer than the column
    await cut_repo.save_fill(fill("t3"))
    proxied.proxy.heal()
    await drained(cut_repo)
    ids = await stored_trade_ids(proxied.backend.db_type, proxied.backend.url)
    assert ids == ["t1", "t3"]
    (dead,) = [json.loads(line) for line in cut_repo.dead_letter_path.read_text().splitlines()]
    assert "longer than" in dead["reason"]
    assert dead["record"]["fills"][0]["trade_id"] == "t2"


# --- the journal ------------------------------------------------------------------------


def start_writer(proxied: Proxied, journal: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.storage.writer_process",
            proxied.backend.db_type,
            proxied.url,
            str(journal),
            str(COUNT),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_a_killed_writer_loses_nothing_it_journaled(proxied: Proxied, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    writer = start_writer(proxied, journal)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "started"
        proxied.proxy.cut()
        writer.stdin.write("go\n")
        writer.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(writer.stdout.readline), WAIT)
        assert line.split() == ["written", str(COUNT), str(COUNT)]
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
        for stream in (writer.stdin, writer.stdout):
            if stream is not None:
                stream.close()
    proxied.proxy.heal()
    # a small memory queue: the restart reads most of the journal back in chunks
    repo = buffered(proxied.backend.db_type, proxied.backend.url, journal, buffer_size=100)
    await repo.start()  # replays what the killed process journaled
    try:
        assert repo.pending == 0
    finally:
        await repo.close()
    ids = await stored_trade_ids(proxied.backend.db_type, proxied.backend.url)
    assert ids == expected_ids(COUNT)


async def test_a_corrupt_journal_line_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    good = [Record(n, "fills", fills=(fill(f"t{n}", ts=1000.0 + n),)) for n in range(1, 5)]
    journal.write_bytes(
        encode(good[0])
        + encode(good[1])
        + b'{"seq": 3, "op": "fills", "fills": [{"trade_id": \n'  # damaged
        + b"\x00\xff garbage\n"
        + encode(good[2])
        + encode(good[3])[:-10]  # torn by a crash mid-write
    )
    db = str(tmp_path / "q.db")
    repo = buffered("sqlite", db, journal)
    with capture_logs() as logs:
        await repo.start()
    try:
        assert repo.pending == 0
    finally:
        await repo.close()
    assert await stored_trade_ids("sqlite", db) == ["t1", "t2", "t3"]
    errors = [e for e in logs if e["event"] == "journal_line_corrupt"]
    assert len(errors) == 3 and all(e["log_level"] == "error" for e in errors)
    dead = dead_letter_path(journal).read_text().splitlines()
    assert len(dead) == 3 and "unreadable journal line" in dead[0]
    assert journal.stat().st_size == 0


# --- metrics ----------------------------------------------------------------------------


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def test_the_database_metrics_are_recorded(proxied: Proxied, tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    repo = buffered(proxied.backend.db_type, proxied.url, tmp_path / "j.jsonl", metrics=metrics)
    await repo.start()
    try:
        await repo.save_fill(fill("t0"))
        assert (
            sample(
                metrics, "quantmesh_db_query_duration_seconds_count", {"operation": "save_fills"}
            )
            == 1
        )
        assert sample(metrics, "quantmesh_db_connections", {"state": "open"}) >= 1
        assert sample(metrics, "quantmesh_db_connections", {"state": "in_use"}) == 0
        proxied.proxy.cut()
        for n in range(1, 11):
            await repo.save_fill(fill(f"t{n}"))
        await repo.save_fill(fill("bad", symbol="X" * 100))
        assert sample(metrics, "quantmesh_db_buffer_depth") == 11
        assert sample(metrics, "quantmesh_db_journal_bytes") > 0
        assert sample(metrics, "quantmesh_db_buffered_total", {"operation": "save_fills"}) == 11
        errors = sample(
            metrics,
            "quantmesh_db_errors_total",
            {"operation": "save_fills", "error": "unavailable"},
        )
        assert errors >= 1
        proxied.proxy.heal()
        await drained(repo)
        assert sample(metrics, "quantmesh_db_replayed_total") == 11
        assert sample(metrics, "quantmesh_db_dead_lettered_total") == 1
        assert sample(metrics, "quantmesh_db_buffer_depth") == 0
        assert sample(metrics, "quantmesh_db_journal_bytes") == 0
    finally:
        await repo.close()


async def test_the_buffer_reads_empty_only_once_the_replay_is_accounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pending`` is what readiness, shutdown and ``drained`` watch: when it reads 0 the
    replay counter, the depth and the emptied journal must already say so. A slow disk
    (a busy host) stretches the emptying of the journal, where that gap used to be."""
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(
        b"".join(encode(Record(n, "fills", fills=(fill(f"t{n}"),))) for n in range(1, 6))
    )
    loop = asyncio.get_running_loop()
    clearing = asyncio.Event()
    clear = Journal.clear

    def slow_clear(self: Journal) -> None:  # runs in a worker thread
        loop.call_soon_threadsafe(clearing.set)
        time.sleep(0.3)
        clear(self)

    monkeypatch.setattr(Journal, "clear", slow_clear)
    metrics = Metrics(CollectorRegistry())
    repo = buffered("sqlite", str(tmp_path / "q.db"), journal, metrics=metrics)
    starting = asyncio.create_task(repo.start())  # replays the journal
    try:
        async with asyncio.timeout(WAIT):
            await clearing.wait()
        # the journal is being emptied: the batch must still count as pending
        assert repo.pending == 5
        assert sample(metrics, "quantmesh_db_replayed_total") == 0
        await starting
        assert repo.pending == 0
        assert sample(metrics, "quantmesh_db_replayed_total") == 5
        assert sample(metrics, "quantmesh_db_buffer_depth") == 0
        assert sample(metrics, "quantmesh_db_journal_bytes") == 0
    finally:
        await repo.close()
    assert await stored_trade_ids("sqlite", str(tmp_path / "q.db")) == [
        f"t{n}" for n in range(1, 6)
    ]


async def test_a_write_that_loses_every_deadlock_retry_is_buffered_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The async engine path (the servers'), driven through aiosqlite: the server keeps
    choosing the insert as the deadlock victim, the runner gives up, the buffer keeps it."""
    monkeypatch.setattr(runner_module, "backoff", lambda attempt: 0.0)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    losing = True

    def victim(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if losing and statement.startswith("INSERT INTO trades"):
            raise OperationalError(statement, {}, Exception(1213, "Deadlock found"))

    event.listen(engine.sync_engine, "before_cursor_execute", victim)
    metrics = Metrics(CollectorRegistry())
    inner = SqlRepository(engine, "binance", clock=FakeClock(), metrics=metrics.db)
    repo = BufferedRepository(inner, tmp_path / "j.jsonl", retry_interval=60, metrics=metrics.db)
    await repo.start()
    try:
        await repo.save_fill(fill("t1"))  # no exception: buffered
        assert repo.pending == 1
        assert sample(metrics, "quantmesh_db_buffered_total", {"operation": "save_fills"}) == 1
        kinds = {"operation": "save_fills", "error": "deadlock"}
        assert sample(metrics, "quantmesh_db_errors_total", kinds) == 1
        losing = False
        assert await repo.flush() == 1
        assert [f.trade_id for f in await repo.get_trades(TradeFilter())] == ["t1"]
        assert not repo.dead_letter_path.exists()
    finally:
        await repo.close()
