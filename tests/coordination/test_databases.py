"""A symbol's grid lives in one database: an instance whose database is not shared
(SQLite) never claims a symbol another live member lists, and no instance takes a symbol
over from another when either database is not shared."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from quantmesh.coordination.allocation import Member
from quantmesh.coordination.fleet import Fleet
from tests.servers.proxy import TcpProxy
from tests.servers.redis import RedisServer
from tests.trading.support import until

from .support import CHECK, TTL, Instances

pytestmark = pytest.mark.usefixtures("redis")  # a fresh Redis for every test
ETH = "ETH/USDT"
BTC = "BTC/USDT"


def not_claimed(status: dict[str, object]) -> dict[str, str]:
    value = status["not_claimed"]
    assert isinstance(value, dict)
    return value


async def test_an_unshared_database_never_claims_a_symbol_another_live_member_lists(
    instances: Instances, redis_server: RedisServer
) -> None:
    a = instances.start("a", redis_server.port, database="sqlite")
    await until(lambda: a.trading() == {ETH})
    with capture_logs() as logs:
        b = instances.start("b", redis_server.port, database="sqlite")
        await until(lambda: ETH in not_claimed(b.coordinator.status()))
    reason = not_claimed(b.coordinator.status())[ETH]
    assert reason.startswith("also listed by a, and this instance's database (sqlite) is not")
    assert [e["symbol"] for e in logs if e["event"] == "symbol_not_claimed"] == [ETH]
    status = b.coordinator.status()
    assert status["database"] == "sqlite" and status["database_shared"] is False
    assert status["wanted"] == []
    # b no longer lists it: a, its owner, sees no other instance configured with it
    await until(lambda: all(ETH not in m.symbols for m in a.coordinator.members if m.id == "b"))
    assert a.coordinator.status()["not_claimed"] == {}

    await a.close()  # a clean stop releases ETH: b still does not take it
    await asyncio.sleep(TTL + 3 * CHECK)
    assert b.trading() == set()
    assert b.sample("quantmesh_ownership_changes_total", symbol=ETH, event="acquired") == 0
    await b.close()


async def test_no_take_over_from_an_unshared_database_and_its_owner_resumes(
    instances: Instances, redis_server: RedisServer
) -> None:
    with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        a = instances.start("a", proxy.port, database="sqlite")
        await until(lambda: a.trading() == {ETH})
        c = instances.start("c", redis_server.port)  # postgres: waits for the lease
        await until(lambda: c.coordinator.status()["waiting_for"] == {ETH: "a"})

        proxy.cut()  # a stops at its lease's deadline, its heartbeat lapses
        await until(lambda: a.trading() == set(), timeout=TTL + 1)
        await until(lambda: ETH in not_claimed(c.coordinator.status()), timeout=2 * TTL + 3)
        reason = not_claimed(c.coordinator.status())[ETH]
        assert reason.startswith("last traded by a, and a's database (sqlite) is not shared")
        assert "redis-cli HDEL 'quantmesh:lock:{fleet:simulated}:owners' ETH/USDT" in reason
        await asyncio.sleep(3 * CHECK)
        assert c.trading() == set()
        assert c.sample("quantmesh_failovers_total", symbol=ETH) == 0

        proxy.heal()  # a is back: the symbol's grid is in its database, it trades again
        await until(lambda: a.trading() == {ETH}, timeout=3 * TTL + 3)
        assert c.trading() == set()
        await asyncio.gather(a.close(), c.close())


async def test_an_unshared_database_trades_a_symbol_only_once_recorded_as_its_owner(
    instances: Instances, redis_server: RedisServer, redis: Redis
) -> None:
    owners = "quantmesh:lock:{fleet:simulated}:owners"
    await redis.set(owners, "not a hash")  # every ownership record write fails (WRONGTYPE)
    lite = instances.start("lite", redis_server.port, (ETH,), database="sqlite")
    # one at a time: the migrations of in-process SQLite databases must not overlap
    await until(lambda: lite.coordinator.registered.is_set())
    pg = instances.start("pg", redis_server.port, (BTC,))
    # the shared one trades without its record (after a whole lease of grace)
    await until(lambda: pg.trading() == {BTC}, timeout=TTL + 5)
    assert lite.trading() == set()
    assert lite.sample("quantmesh_ownership_changes_total", symbol=ETH, event="acquired") >= 1
    await redis.delete(owners)
    await until(lambda: lite.trading() == {ETH}, timeout=TTL + 5)
    record = await redis.hget(owners, ETH)
    assert record is not None and b'"owner":"lite"' in record
    await asyncio.gather(lite.close(), pg.close())


def fleet_of(redis: Redis, name: str, database: str | None) -> Fleet:
    member = Member(name, "master", frozenset({ETH, BTC}), database)
    return Fleet(redis, prefix="quantmesh:lock:", exchange="binance", me=member, ttl=1.0)


async def test_owner_records_keep_a_symbol_on_its_database(redis: Redis) -> None:
    lite = fleet_of(redis, "lite", "sqlite")
    pg1, pg2 = fleet_of(redis, "pg-1", "postgres"), fleet_of(redis, "pg-2", "mysql")
    other_lite = fleet_of(redis, "lite-2", "sqlite")

    assert (await lite.record_owner(ETH, "held", 10, 1.0)).stored
    refused = await pg1.record_owner(ETH, "held", 11, 2.0)  # from SQLite: no
    assert not refused.stored and refused.other_database
    assert refused.previous is not None
    assert (refused.previous.owner, refused.previous.shared) == ("lite", False)
    assert refused.previous.database == "sqlite"
    assert (await lite.record_owner(ETH, "released", 10, 1.0)).stored
    assert (await pg1.record_owner(ETH, "held", 12, 2.0)).other_database  # released: still no
    assert (await lite.record_owner(ETH, "held", 13, 3.0)).stored  # its own: yes

    assert (await pg1.record_owner(BTC, "held", 20, 1.0)).stored
    assert (await other_lite.record_owner(BTC, "held", 21, 2.0)).other_database  # to SQLite: no
    moved = await pg2.record_owner(BTC, "held", 22, 2.0)  # between shared databases: yes
    assert moved.stored and not moved.other_database
    record = (await pg1.owners())[BTC]
    assert (record.owner, record.shared, record.database) == ("pg-2", True, "mysql")

    # a record of a version that did not say: shared databases take it over, SQLite not
    await redis.hset(
        "quantmesh:lock:{fleet:binance}:owners",
        "SOL/USDT",
        '{"owner":"old","state":"held","fence":1,"until":0,"since":0}',
    )
    assert (await other_lite.record_owner("SOL/USDT", "held", 30, 1.0)).other_database
    assert (await pg1.record_owner("SOL/USDT", "held", 31, 1.0)).stored


async def test_members_publish_their_database(redis: Redis) -> None:
    lite, pg = fleet_of(redis, "lite", "sqlite"), fleet_of(redis, "pg", "postgres")
    await lite.heartbeat()
    await pg.heartbeat()
    members = {m.id: m for m in await pg.members()}
    assert (members["lite"].database, members["lite"].shared_database) == ("sqlite", False)
    assert (members["pg"].database, members["pg"].shared_database) == ("postgres", True)
    info = await redis.hget("quantmesh:lock:{fleet:binance}:info", "lite")
    assert info is not None and b'"database_shared": false' in info
