"""What only the database lock does (the behaviour every backend shares is in
``test_lock_backends``): failing closed while its database is gone, a read-only server,
errors without the password, the factory's checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from quantmesh.errors import LockError, LockUnavailable
from quantmesh.lock.failover import FailoverLock
from quantmesh.lock.sql import NAME_LEN, SqlElection, SqlLock, build_sql_lock
from quantmesh.storage.engine import create_engine_for
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import TcpProxy
from tests.support import free_port

from .backends import LOCK_DATABASE, SqlBackend, start_again

KEY = "{order:simulated:ETHUSDT}:5"


@pytest.fixture(params=["postgres", "mysql"])
async def sql(request: pytest.FixtureRequest) -> AsyncIterator[SqlBackend]:
    server = request.getfixturevalue("lock_postgres" if request.param == "postgres"
                                     else "lock_mariadb")  # fmt: skip
    backend = SqlBackend(request.param, server)
    await backend.clear()
    yield backend
    for lock in backend.made:
        await lock.close()
    await backend.close()


@pytest.mark.timeout(40)
async def test_the_database_gone_fails_closed_and_comes_back(sql: SqlBackend) -> None:
    locker = sql.locker()
    guarded = FailoverLock(locker, fallback_mode="halt", health_check_interval=60.0,
                           backend=sql.name)  # fmt: skip
    lease = await locker.try_lock(KEY, 30.0)
    assert lease is not None
    await locker.start()
    assert locker.health().mode == "distributed"
    sql.server.kill()
    try:
        started = time.monotonic()
        with pytest.raises(LockUnavailable):
            await locker.try_lock(f"{KEY}:other", 5.0)  # refused, never granted
        with pytest.raises(LockUnavailable):
            await locker.extend(lease, 30.0)  # the holder learns it can no longer renew
        with pytest.raises(LockUnavailable):
            await locker.ping()
        assert time.monotonic() - started < 10  # each call bounded by its timeouts
        health = locker.health()
        assert health.backend == sql.name and health.mode == "halted" and health.reason
        assert not await guarded.check()
        assert guarded.state == "halted" and not guarded.ready
        with pytest.raises(LockUnavailable):
            await guarded.try_lock(f"{KEY}:other", 5.0)
    finally:
        start_again(sql.server)
    # back: the lease the database kept is still the holder's, and new keys are granted
    assert await guarded.check(), guarded.reason
    assert locker.health().mode == "distributed"
    renewed = await locker.extend(lease, 30.0)
    assert renewed is not None
    other = await locker.try_lock(f"{KEY}:other", 5.0)
    assert other is not None and other.fence > lease.fence
    assert await locker.unlock(renewed) and await locker.unlock(other)


@pytest.mark.timeout(20)
async def test_a_server_that_stops_answering_fails_the_call_within_its_timeout(
    sql: SqlBackend,
) -> None:
    """A stalled server (a partition, a frozen host) is no answer within
    ``request_timeout``: unavailable, not retried, the connection closed; the next call on
    an answering server is granted."""
    with TcpProxy("127.0.0.1", sql.port) as proxy:
        locker = sql.locker(proxy.port)  # request_timeout 1 s
        await locker.ping()  # connected before the stall
        proxy.delay = 3.0
        started = time.monotonic()
        with pytest.raises(LockUnavailable, match="no answer within 1 s"):
            await locker.try_lock(KEY, 5.0)
        assert 0.9 < time.monotonic() - started < 1.8
        proxy.delay = 0.0
        await locker.settle()  # the background release of the acquire that may have run
        lease = await locker.try_lock(f"{KEY}:after", 5.0)
        assert lease is not None


@pytest.mark.timeout(20)
async def test_one_instance_sends_each_fleet_event_per_window(sql: SqlBackend) -> None:
    def election(locker: SqlLock, fallback: bool) -> SqlElection:
        return SqlElection(locker, window=0.3, fallback=lambda: fallback)

    one, two = election(sql.locker(), False), election(sql.locker(), False)
    assert await one.elect("lock_halted") and not await two.elect("lock_halted")
    assert await two.elect("db_recovered")  # another event: its own election
    await asyncio.sleep(0.35)  # the window passed: the same event later is sent again
    assert await two.elect("lock_halted") and not await one.elect("lock_halted")
    gone = sql.locker(free_port())  # no database there: the fallback decides
    assert await election(gone, True).elect("x") and not await election(gone, False).elect("x")


@pytest.mark.timeout(20)
async def test_a_read_only_database_grants_nothing(lock_postgres: PostgresServer) -> None:
    """A primary demoted to a replica answers reads: the health check writes."""
    lock_postgres.query(f'ALTER DATABASE "{LOCK_DATABASE}" SET default_transaction_read_only = on')
    try:
        backend = SqlBackend("postgres", lock_postgres)
        locker = backend.locker()
        try:
            with pytest.raises(LockUnavailable, match="read-only"):
                await locker.ping()
            with pytest.raises(LockUnavailable):
                await locker.try_lock(KEY, 5.0)
        finally:
            await locker.close()
            await backend.close()
    finally:
        lock_postgres.query(
            f'ALTER DATABASE "{LOCK_DATABASE}" SET default_transaction_read_only = off'
        )


@pytest.mark.timeout(20)
async def test_a_missing_table_is_an_error_not_an_outage(lock_mariadb: MariaDBServer) -> None:
    """A database the migration never ran on: a ``LockError`` saying so, not granted."""
    lock_mariadb.create_database("qm_no_table")
    engine = create_engine_for("mysql", lock_mariadb.url("qm_no_table"))
    assert isinstance(engine, AsyncEngine)
    locker = SqlLock(engine)
    try:
        with pytest.raises(LockError, match="lock_leases") as raised:
            await locker.try_lock(KEY, 5.0)
        assert not isinstance(raised.value, LockUnavailable)
    finally:
        await locker.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("scheme", ["postgresql+asyncpg", "mysql+aiomysql"])
async def test_errors_never_show_the_password(scheme: str) -> None:
    url = f"{scheme}://trader:s3cret-pw@127.0.0.1:{free_port()}/quantmesh"
    locker = build_sql_lock(create_async_engine(url, connect_args=_short(scheme)))
    try:
        with pytest.raises(LockUnavailable) as raised:
            await locker.try_lock(KEY, 5.0)
        with pytest.raises(LockUnavailable):
            await locker.ping()
        for text in (str(raised.value), locker.health().reason):
            assert "s3cret" not in text and text
    finally:
        await locker.close()


def _short(scheme: str) -> dict[str, float]:
    return {"timeout": 1.0} if scheme.startswith("postgresql") else {"connect_timeout": 1}


async def test_the_factory_refuses_sqlite_and_long_names() -> None:
    with pytest.raises(ValueError, match="PostgreSQL or MySQL"):
        build_sql_lock(create_async_engine("sqlite+aiosqlite:///:memory:"))
    engine = create_async_engine("postgresql+asyncpg://u@127.0.0.1:1/db")
    locker = build_sql_lock(engine)
    try:
        with pytest.raises(ValueError, match="at most"):
            await locker.try_lock("x" * NAME_LEN, 5.0)
        with pytest.raises(ValueError, match="ttl"):
            await locker.try_lock(KEY, 0.0)
    finally:
        await locker.close()
