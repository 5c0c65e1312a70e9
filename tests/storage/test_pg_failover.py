"""A PostgreSQL primary lost, its streaming replica promoted: QuantMesh's storage, pointed
at both hosts with ``target_session_attrs=read-write``, buffers the writes meanwhile and
replays them into the new primary; nothing lost, nothing stored twice.

Real processes: a primary, and a replica made from it with ``pg_basebackup`` that it
waits for at each commit (synchronous replication: a commit the primary acknowledged is
on the replica, so killing the primary loses none). The writes go through the same write
buffer, journal and replayer as the daemon's (``BufferedRepository``).

The last test runs a whole instance on them (the Redis lock and symbol ownership, a
trader on the simulated exchange) and checks that it keeps its symbol and trading through
the switch, and that the database ends with every order and fill the exchange saw, once.

The time from the promotion to the first replayed write is printed (``-s`` shows it),
never asserted: it depends on ``database.retry_interval`` (0.1 s here) and this machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.errors import StorageUnavailable
from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.storage.buffer import BufferedRepository
from quantmesh.storage.db_errors import map_db_error
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository
from tests.coordination.support import Instances
from tests.lock.conftest import redis, redis_server
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import TcpProxy
from tests.servers.redis import RedisServer
from tests.support import FakeClock
from tests.trading.support import until

from .support import fill, order

__all__ = ["redis", "redis_server"]  # the lock tests' Redis: one server, flushed per test

DATABASE = "qm"
BEFORE = 300  # writes stored before the primary dies (at least)
TOTAL = 1500  # writes in all, one fill each and an order update every tenth


@dataclass
class Pair:
    primary: PostgresServer
    replica: PostgresServer
    link: TcpProxy  # the replica streams through it: a test can stall replication


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A primary with a synchronous streaming replica, both empty but for ``DATABASE``."""
    with PostgresServer(settings={"synchronous_commit": "on"}) as primary:
        primary.create_database(DATABASE)
        with (
            TcpProxy("127.0.0.1", primary.port) as link,
            PostgresServer(primary=primary, upstream_port=link.port) as replica,
        ):
            primary.wait_for_replica(synchronous=True)
            yield Pair(primary, replica, link)


def dsn(*ports: int, attrs: str = "read-write") -> str:
    """The seed's key/value form with a host list (every host on loopback)."""
    hosts = ",".join("127.0.0.1" for _ in ports)
    return (
        f"host={hosts} port={','.join(map(str, ports))} user=postgres dbname={DATABASE} "
        f"target_session_attrs={attrs} connect_timeout=1"
    )


def server_engine(url: str) -> AsyncEngine:
    engine = create_engine_for("postgres", url)
    assert isinstance(engine, AsyncEngine)
    return engine


def buffered(url: str, journal: Path) -> BufferedRepository:
    engine = create_engine_for("postgres", url, connect_timeout=1, statement_timeout=2)
    inner = SqlRepository(engine, "binance", clock=FakeClock())
    return BufferedRepository(inner, journal, retry_interval=0.1)


async def write(repo: BufferedRepository, n: int) -> None:
    """The ``n``-th write of a trader: a fill, after an order update every tenth."""
    if n % 10 == 0:
        await repo.save_order(order(f"c{n}", status="filled", filled="0.1"))
    await repo.save_fill(fill(f"t{n:05d}", ts=1000.0 + n, client_order_id=f"c{n - n % 10}"))


async def write_through(repo: BufferedRepository, kill: asyncio.Event) -> int:
    """Write ``TOTAL`` records as fast as they are taken, setting ``kill`` after ``BEFORE``;
    return how many were written before the first was buffered."""
    direct = -1
    for n in range(TOTAL):
        if n == BEFORE:
            kill.set()
        await write(repo, n)
        if direct < 0 and repo.pending:
            direct = n
        await asyncio.sleep(0)  # let the kill land mid-stream
    return direct


async def promote_and_drain(repo: BufferedRepository, replica: PostgresServer, what: str) -> None:
    """Promote ``replica``; wait until ``repo`` has replayed everything. Prints when the
    promotion returned and when the first replayed batch was stored, both counted from the
    moment the promotion was asked (the replica may take writes a little before
    ``pg_promote`` returns)."""
    waiting = repo.pending
    assert waiting, "nothing was buffered: the outage was not seen"
    asked = time.monotonic()
    promotion = asyncio.create_task(asyncio.to_thread(replica.promote))
    promoted: float | None = None
    first: float | None = None
    async with asyncio.timeout(20):
        while True:
            if promoted is None and promotion.done():
                await promotion
                promoted = time.monotonic() - asked
            if first is None and repo.pending < waiting:
                first = time.monotonic() - asked
            if promoted is not None and first is not None and not repo.pending:
                break
            await asyncio.sleep(0.005)
    print(
        f"\n{what}: {waiting} writes buffered; from the promotion asked: promoted in "
        f"{promoted * 1000:.0f} ms, first replayed batch stored in {first * 1000:.0f} ms"
    )


def assert_stored_once(server: PostgresServer, journal: Path) -> None:
    """Every write in ``server``'s tables exactly once; nothing left in the journal or set
    aside as a dead letter."""
    trades = server.query(
        "SELECT count(*), count(DISTINCT trade_id), min(trade_id), max(trade_id) FROM trades",
        DATABASE,
    )
    assert trades == [[str(TOTAL), str(TOTAL), "t00000", f"t{TOTAL - 1:05d}"]]
    orders = server.query("SELECT count(*), count(DISTINCT client_order_id) FROM orders", DATABASE)
    assert orders == [[str(TOTAL // 10)] * 2]
    assert journal.stat().st_size == 0
    dead = journal.with_name("journal.dead.jsonl")
    assert not dead.exists() or dead.stat().st_size == 0


@pytest.mark.timeout(40)
async def test_writes_through_a_killed_primary_land_once_on_the_promoted_replica(
    pair: Pair, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    repo = buffered(dsn(pair.primary.port, pair.replica.port), journal)
    await repo.start()
    try:
        kill = asyncio.Event()
        writer = asyncio.create_task(write_through(repo, kill))
        await kill.wait()
        await asyncio.to_thread(pair.primary.kill)
        direct = await writer
        assert BEFORE <= direct < TOTAL  # some stored directly, the rest buffered
        # the replica is up but read-only: no host is a primary, so writes wait
        with pytest.raises(StorageUnavailable, match="writes wait in the write buffer"):
            await repo.get_order("c0")
        assert pair.replica.in_recovery()
        await promote_and_drain(repo, pair.replica, "killed primary")
        await write(repo, 0)  # the same write again: an upsert, stored directly
        assert repo.pending == 0
    finally:
        await repo.close()
    assert_stored_once(pair.replica, journal)


@pytest.mark.timeout(40)
async def test_a_replica_that_fell_behind_still_has_every_acknowledged_write(
    pair: Pair, tmp_path: Path
) -> None:
    """Replication stalls (its link answers nothing), then the primary dies. With
    synchronous replication the primary acknowledges no commit the replica lacks: the write
    waiting for it fails at the statement timeout, and it and the writes after it wait in
    the buffer. (With asynchronous replication they would be acknowledged, removed from the
    buffer, and missing on the promoted replica.)"""
    journal = tmp_path / "journal.jsonl"
    repo = buffered(dsn(pair.primary.port, pair.replica.port), journal)
    await repo.start()
    try:
        kill = asyncio.Event()
        writer = asyncio.create_task(write_through(repo, kill))
        await kill.wait()
        pair.link.blackhole()
        await until(lambda: repo.pending > 0, timeout=10)  # the primary still up
        await asyncio.to_thread(pair.primary.kill)
        direct = await writer
        assert BEFORE <= direct < TOTAL
        await promote_and_drain(repo, pair.replica, "stalled replication")
    finally:
        await repo.close()
    assert_stored_once(pair.replica, journal)


@pytest.mark.timeout(40)
async def test_a_primary_that_answers_nothing_is_skipped_after_the_connect_timeout(
    pair: Pair, tmp_path: Path
) -> None:
    """The primary's machine gone silent (connections accepted, nothing answered, as a
    dropped host or a partition looks): each host gets its own connect timeout, so the
    promoted replica is reached; a timeout shared by all hosts would end on the first."""
    journal = tmp_path / "journal.jsonl"
    with TcpProxy("127.0.0.1", pair.primary.port) as proxy:
        repo = buffered(dsn(proxy.port, pair.replica.port), journal)
        await repo.start()
        try:
            kill = asyncio.Event()
            writer = asyncio.create_task(write_through(repo, kill))
            await kill.wait()
            proxy.blackhole()
            await asyncio.to_thread(pair.primary.kill)
            direct = await writer
            assert BEFORE <= direct < TOTAL
            await promote_and_drain(repo, pair.replica, "silent primary")
        finally:
            await repo.close()
    assert_stored_once(pair.replica, journal)


@pytest.mark.timeout(30)
async def test_target_session_attrs_picks_the_host_and_no_match_is_an_outage(
    pair: Pair,
) -> None:
    """Hosts listed replica first: ``read-write`` skips it for the primary, ``read-only``
    takes it. Only standbys listed (as when the primary is gone and no replica promoted
    yet): connecting fails as an outage, which the write buffer waits out; as a plain
    error, a write failing so for minutes would be set aside as stuck."""
    for attrs, standby in (("read-write", False), ("read-only", True)):
        engine = server_engine(dsn(pair.replica.port, pair.primary.port, attrs=attrs))
        try:
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT pg_is_in_recovery()")) is standby
        finally:
            await engine.dispose()
    engine = server_engine(dsn(pair.replica.port, pair.replica.port))
    try:
        with pytest.raises(DBAPIError) as info:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert isinstance(map_db_error(info.value, "save_fills"), StorageUnavailable)


ETH = "ETH/USDT"


async def walk(exchange: SimulatedExchange, prices: list[int], done: Callable[[], bool]) -> None:
    """Price ticks through ``prices``, over and over, until ``done()``."""
    async with asyncio.timeout(15):
        while True:
            for price in prices:
                exchange.set_price(ETH, Decimal(price))
                await asyncio.sleep(0.05)
            if done():
                return


@pytest.mark.timeout(45)
@pytest.mark.usefixtures("redis")
async def test_an_instance_trades_through_the_failover_and_the_database_gets_it_all_once(
    pair: Pair, redis_server: RedisServer, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    repo = buffered(dsn(pair.primary.port, pair.replica.port), journal)
    instances = Instances(tmp_path)
    try:
        node = instances.start("a", redis_server.port, repository=repo)
        await until(lambda: node.trading() == {ETH}, timeout=10)
        exchange = node.service.exchange
        assert isinstance(exchange, SimulatedExchange)
        engine = exchange.engine
        swing = [2001, 1985, 1975, 1995, 2015, 2025]  # buys fill on the way down, sells up
        await walk(exchange, swing, lambda: len(engine.fills()) >= 4)
        await asyncio.to_thread(pair.primary.kill)
        placed, filled = len(engine.all_orders()), len(engine.fills())
        # the instance keeps its symbol and trades on: its writes wait in the buffer
        await walk(
            exchange,
            swing,
            lambda: len(engine.all_orders()) >= placed + 4 and len(engine.fills()) >= filled + 4,
        )
        assert repo.pending
        assert node.trading() == {ETH}
        assert node.coordinator.status()["owned"] == [ETH]
        await promote_and_drain(repo, pair.replica, "an instance trading")
        await walk(exchange, swing, lambda: len(engine.fills()) >= filled + 8)
        assert node.trading() == {ETH}
    finally:
        await instances.close()
    assert repo.pending == 0
    orders = {o.client_order_id for o in engine.all_orders()}
    stored = pair.replica.query("SELECT client_order_id FROM orders", DATABASE)
    assert sorted(row[0] for row in stored) == sorted(orders)
    trades = {f.trade_id for f in engine.fills()}
    stored = pair.replica.query("SELECT trade_id FROM trades", DATABASE)
    assert sorted(row[0] for row in stored) == sorted(trades)
