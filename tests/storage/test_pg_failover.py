"""A PostgreSQL primary lost, its streaming replica promoted: QuantMesh's storage, pointed
at both hosts with ``target_session_attrs=read-write``, buffers the writes meanwhile and
replays them into the new primary; nothing lost, nothing stored twice.

Real processes: a primary, and a replica made from it with ``pg_basebackup`` that it
waits for at each commit (synchronous replication: a commit the primary acknowledged is
on the replica, so killing the primary loses none). The writes go through the same write
buffer, journal and replayer as the daemon's (``BufferedRepository``).

The time from the promotion to the first replayed write is printed (``-s`` shows it),
never asserted: it depends on ``database.retry_interval`` (0.1 s here) and this machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.errors import StorageUnavailable
from quantmesh.storage.buffer import BufferedRepository
from quantmesh.storage.db_errors import map_db_error
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import TcpProxy
from tests.support import FakeClock

from .support import fill, order

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


async def promote_and_drain(repo: BufferedRepository, replica: PostgresServer) -> float:
    """Promote ``replica``; wait until ``repo`` has replayed everything. Returns the
    seconds from the promotion's end to the first replayed batch."""
    waiting = repo.pending
    assert waiting, "nothing was buffered: the outage was not seen"
    await asyncio.to_thread(replica.promote)
    promoted = time.monotonic()
    first: float | None = None
    async with asyncio.timeout(20):
        while repo.pending:
            if first is None and repo.pending < waiting:
                first = time.monotonic() - promoted
            await asyncio.sleep(0.005)
    return time.monotonic() - promoted if first is None else first


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
        seconds = await promote_and_drain(repo, pair.replica)
        print(f"\npromotion -> first replayed write: {seconds * 1000:.0f} ms (retry 0.1 s)")
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
    synchronous replication the primary acknowledges no commit the replica lacks: the
    writes meanwhile fail and wait in the buffer. (With asynchronous replication they would
    be acknowledged, removed from the buffer, and missing on the promoted replica.)"""
    journal = tmp_path / "journal.jsonl"
    repo = buffered(dsn(pair.primary.port, pair.replica.port), journal)
    await repo.start()
    try:
        kill = asyncio.Event()
        writer = asyncio.create_task(write_through(repo, kill))
        await kill.wait()
        pair.link.blackhole()
        await asyncio.sleep(0.5)  # writes made meanwhile reach the primary alone
        await asyncio.to_thread(pair.primary.kill)
        direct = await writer
        assert BEFORE <= direct < TOTAL
        seconds = await promote_and_drain(repo, pair.replica)
        print(f"\nstalled replica: promotion -> first replayed write: {seconds * 1000:.0f} ms")
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
            seconds = await promote_and_drain(repo, pair.replica)
            print(f"\nsilent primary: promotion -> first replayed write: {seconds * 1000:.0f} ms")
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
