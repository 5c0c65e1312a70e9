"""The lock servers a fleet can share (``coordination.servers``): one factory per
``distributed_lock.type``; an instance on etcd never loads redis-py; etcd's notification
election; etcd with authentication enabled; the database locks' election (a lease row,
and the smallest live id while the database is gone), and a database lock that cannot
connect failing at once, its password unseen; a transaction left open by a frozen
instance ended by the server; a primary's dead host skipped within one lock call."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from sqlalchemy import text

from quantmesh.config import Settings, parse_settings
from quantmesh.config.lock_servers import LockServerType
from quantmesh.coordination.coordinator import member_of
from quantmesh.coordination.membership import FleetStore
from quantmesh.coordination.servers import (
    LOCK_SERVERS,
    SQL_FLEET_TIMEOUT,
    SQL_IDLE_IN_TRANSACTION,
    lock_server,
    sql_engine,
)
from quantmesh.errors import LockError
from quantmesh.lock.etcd import EtcdGateway, EtcdLock
from quantmesh.notify.election import EtcdElection, smallest_id
from tests.lock.backends import LOCK_DATABASE
from tests.servers.etcd import EtcdServer, request
from tests.servers.postgres import PG_USER, PostgresServer
from tests.servers.proxy import TcpProxy
from tests.support import free_port

from .conftest import clear_etcd
from .support import database_url

pytestmark = pytest.mark.timeout(60)
PREFIX = "quantmesh:lock:"
ROOT = Path(__file__).resolve().parents[2]


def test_every_lock_type_has_its_server_factory() -> None:
    assert set(LOCK_SERVERS) == set(get_args(LockServerType))


# Builds the service as `quantmesh run` does, joins the fleet, reads the owners as
# `quantmesh status` does, and says which client libraries were loaded.
_ETCD_ONLY = """
import asyncio, sys
from quantmesh.config import parse_settings
from quantmesh.wiring import build_service, read_owners

settings = parse_settings('''
instance: {id: lone}
database: {type: sqlite, dsn: "%(db)s"}
distributed_lock: {enabled: true, type: etcd}
etcd: {endpoints: ["127.0.0.1:%(port)d"]}
trading: {symbols: [{symbol: ETHUSDT, price_interval: 10}]}
''', env={})

async def main():
    service = build_service(settings)
    await service.coordinator._fleet.heartbeat()
    print(await read_owners(settings))
    await service.locker.close()

asyncio.run(main())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("redis", "aiohttp")))
"""


def test_an_instance_on_etcd_never_loads_redis_py(etcd_server: EtcdServer, tmp_path: Path) -> None:
    clear_etcd(etcd_server.url)
    script = _ETCD_ONLY % {"db": tmp_path / "q.db", "port": etcd_server.port}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    owners, loaded = done.stdout.strip().splitlines()[-2:]
    assert owners == "({}, ['live instances: lone (master)'])"
    assert "'aiohttp'" in loaded and "redis" not in loaded.replace("aiohttp", "")


def election(url: str, instance: str, members: list[str] | None = None) -> EtcdElection:
    return EtcdElection(
        EtcdGateway([url]),
        prefix=PREFIX,
        instance=instance,
        window=1.0,
        fallback=smallest_id(instance, lambda: members or []),
        timeout=1.0,
    )


async def test_etcd_elects_one_sender_per_event_and_window(etcd_server: EtcdServer) -> None:
    clear_etcd(etcd_server.url)
    a, b, c = (election(etcd_server.url, name) for name in "abc")
    won = await asyncio.gather(*(e.elect("lock_halted") for e in (a, b, c)))
    assert sorted(won) == [False, False, True]
    assert await b.elect("lock_recovered")  # another key: its own election
    # the window over (etcd's lease of 1 s, expired by its next sweep), the same event
    # later is sent again
    deadline = time.monotonic() + 4.0
    while not await c.elect("lock_halted"):
        assert time.monotonic() < deadline, "the election's lease never expired"
        await asyncio.sleep(0.1)
    for e in (a, b, c):
        await e._client.close()  # type: ignore[attr-defined]


async def test_the_etcd_server_elects_through_its_lock_client(etcd_server: EtcdServer) -> None:
    clear_etcd(etcd_server.url)
    text = f"""
distributed_lock: {{enabled: true, type: etcd}}
etcd: {{endpoints: ['127.0.0.1:{etcd_server.port}']}}
trading: {{symbols: [{{symbol: ETHUSDT, price_interval: 10}}]}}
"""
    servers = [lock_server(parse_settings(text, env={})) for _ in range(2)]
    try:
        a, b = (s.election(name, 60.0, lambda: True) for s, name in zip(servers, "ab", strict=True))
        assert sorted([await a.elect("db_recovered"), await b.elect("db_recovered")]) == [
            False,
            True,
        ]
    finally:
        for server in servers:
            await server.close()


async def test_without_etcd_the_smallest_live_id_sends() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    a = election(url, "a", members=["a", "b"])
    b = election(url, "b", members=["a", "b"])
    assert await a.elect("lock_halted") is True
    assert await b.elect("lock_halted") is False
    for e in (a, b):
        await e._client.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def etcd_with_auth() -> Iterator[EtcdServer]:
    """An etcd of its own (authentication is cluster-wide): user ``root``, password
    ``root-pw-4711``."""
    with EtcdServer() as server:
        request(server.url, "/v3/auth/role/add", {"name": "root"})
        request(server.url, "/v3/auth/user/add", {"name": "root", "password": "root-pw-4711"})
        request(server.url, "/v3/auth/user/grant", {"user": "root", "role": "root"})
        request(server.url, "/v3/auth/enable", {})
        yield server


async def test_etcd_with_authentication_takes_the_user_and_keeps_the_password_out_of_errors(
    etcd_with_auth: EtcdServer,
) -> None:
    url = etcd_with_auth.url
    lock = EtcdLock(EtcdGateway([url], username="root", password="root-pw-4711"))
    wrong = EtcdLock(EtcdGateway([url], username="root", password="not-the-pw-0815"))
    anonymous = EtcdLock(EtcdGateway([url]))
    try:
        lease = await lock.try_lock("k", 5.0)
        assert lease is not None
        await lock.ping()
        # a token etcd no longer accepts is replaced, and the request goes through
        lock.client._token = "expired.token"  # type: ignore[attr-defined]
        assert await lock.extend(lease, 5.0) is not None
        assert await lock.unlock(lease)
        for refused, secret in ((wrong, "not-the-pw-0815"), (anonymous, "root-pw-4711")):
            with pytest.raises(LockError) as caught:
                await refused.try_lock("k", 5.0)
            assert secret not in str(caught.value)
        assert "set etcd.username and etcd.password" in str(caught.value)  # the anonymous one
    finally:
        for each in (lock, wrong, anonymous):
            await each.close()


# the database locks (postgres, mysql) ----------------------------------------------------


def database_settings(kind: str, dsn: str) -> Settings:
    return parse_settings(
        f"""
database: {{type: {kind}, dsn: "{dsn}"}}
distributed_lock: {{enabled: true, type: {kind}}}
trading: {{symbols: [{{symbol: ETHUSDT, price_interval: 10}}]}}
""",
        env={},
    )


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_a_database_server_elects_through_its_lock_and_falls_back_without_it(
    kind: str, request: pytest.FixtureRequest
) -> None:
    database = request.getfixturevalue("lock_postgres" if kind == "postgres" else "lock_mariadb")
    database.query("DELETE FROM lock_leases", LOCK_DATABASE)
    settings = database_settings(kind, database_url(kind, database.port))
    servers = [lock_server(settings) for _ in range(3)]
    nowhere = lock_server(database_settings(kind, database_url(kind, free_port())))
    try:
        assert [s.name for s in servers] == [kind] * 3
        a, b, c = (s.election(n, 60.0, lambda: True) for s, n in zip(servers, "abc", strict=True))
        won = await asyncio.gather(*(e.elect("lock_halted") for e in (a, b, c)))
        assert sorted(won) == [False, False, True]
        assert await b.elect("lock_recovered")  # another event: its own election
        # the database gone: the smallest live id sends, the others do not
        fallback_a = nowhere.election("a", 60.0, smallest_id("a", lambda: ["a", "b"]))
        fallback_b = nowhere.election("b", 60.0, smallest_id("b", lambda: ["a", "b"]))
        assert await fallback_a.elect("lock_halted") is True
        assert await fallback_b.elect("lock_halted") is False
    finally:
        for server in (*servers, nowhere):
            await server.close()


async def test_a_database_lock_that_cannot_connect_fails_closed_at_once_without_its_password() -> (
    None
):
    dsn = f"postgresql://qm:DB-PW-8080@127.0.0.1:{free_port()}/qm"  # nothing listens there
    server = lock_server(database_settings("postgres", dsn))
    fleet = server.fleet(member_of("a", "master", ()), "binance", 10.0)
    try:
        for call in (
            server.lock.ping,
            lambda: server.lock.try_lock("k", 5.0),
            fleet.heartbeat,
        ):
            started = time.monotonic()
            with pytest.raises(LockError) as caught:
                await call()
            assert time.monotonic() - started < SQL_FLEET_TIMEOUT
            assert "DB-PW-8080" not in str(caught.value)
    finally:
        await server.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_a_transaction_a_frozen_instance_left_open_blocks_the_fleet_only_briefly(
    kind: str, request: pytest.FixtureRequest
) -> None:
    database = request.getfixturevalue("lock_postgres" if kind == "postgres" else "lock_mariadb")
    database.query("DELETE FROM lock_leases", LOCK_DATABASE)
    settings = database_settings(kind, database_url(kind, database.port))
    live = lock_server(settings)
    fleet = live.fleet(member_of("b", "master", ()), "binance", 10.0)
    frozen = sql_engine(settings)  # the frozen instance's, with the same session bounds
    row = "quantmesh:lock:{fleet:binance}:owners/ETH/USDT"
    try:
        assert (await fleet.record_owner("ETH/USDT", "released", 1, 0.0)).stored
        async with frozen.connect() as conn:
            await conn.begin()  # frozen inside a record: the row stays locked
            await conn.execute(
                text("SELECT fence FROM lock_leases WHERE name = :name FOR UPDATE"), {"name": row}
            )
            started = time.monotonic()
            with pytest.raises(LockError):  # the row lock is waited for, briefly
                await fleet.record_owner("ETH/USDT", "held", 2, 0.0)
            assert time.monotonic() - started < SQL_FLEET_TIMEOUT + 1.0
            # the server ends the frozen session's transaction: the fleet goes on
            while not await _recorded(fleet, 2):
                assert time.monotonic() - started < SQL_IDLE_IN_TRANSACTION + 2 * SQL_FLEET_TIMEOUT
                await asyncio.sleep(0.2)
            with contextlib.suppress(Exception):  # the server closed it
                await conn.close()
    finally:
        await frozen.dispose()
        await live.close()


async def _recorded(fleet: FleetStore, fence: int) -> bool:
    try:
        return (await fleet.record_owner("ETH/USDT", "held", fence, 0.0)).stored
    except LockError:
        return False


@pytest.mark.timeout(30)
async def test_a_database_lock_reaches_the_second_host_when_the_first_drops_packets(
    lock_postgres: PostgresServer,
) -> None:
    lock_postgres.query("DELETE FROM lock_leases", LOCK_DATABASE)
    with TcpProxy("127.0.0.1", lock_postgres.port) as gone:
        gone.blackhole()  # its machine is gone: connections hang, nothing answers
        dsn = (
            f"postgresql://{PG_USER}@127.0.0.1:{gone.port},127.0.0.1:{lock_postgres.port}/"
            f"{LOCK_DATABASE}?target_session_attrs=read-write"
        )
        server = lock_server(database_settings("postgres", dsn))
        try:
            await server.lock.ping()  # within one lock call's timeout, on the second host
            lease = await server.lock.try_lock("k", 5.0)
            assert lease is not None and await server.lock.unlock(lease)
        finally:
            await server.close()
