"""``fallback_mode: single_instance``: ownership leases and membership exactly as with
``halt`` while Redis is healthy; while it is down, the symbols an instance owns and no
other live member lists keep trading on the local lock, the others stop, nothing new is
claimed; when Redis is back, a kept lease Redis still holds goes on, one that lapsed
there ends and the symbol is claimed again (its grid read afresh)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from tests.servers.proxy import TcpProxy
from tests.servers.redis import RedisServer
from tests.trading.support import until

from .support import CHECK, TTL, Instances

pytestmark = pytest.mark.usefixtures("redis")  # a fresh Redis for every test
ETH = "ETH/USDT"
BTC = "BTC/USDT"
OWNERS = "quantmesh:lock:{fleet:simulated}:owners"


async def test_two_single_instance_instances_with_one_symbol_trade_it_one_at_a_time(
    instances: Instances, redis_server: RedisServer
) -> None:
    a = instances.start("a", redis_server.port, fallback_mode="single_instance")
    await until(lambda: a.trading() == {ETH})
    b = instances.start("b", redis_server.port, fallback_mode="single_instance")
    await until(lambda: b.coordinator.status()["waiting_for"] == {ETH: "a"})
    assert a.coordinator.leased and b.coordinator.leased
    await until(lambda: a.coordinator.status()["members"] == ["a", "b"])
    for _ in range(5):
        await asyncio.sleep(CHECK)
        assert a.trading() == {ETH} and b.trading() == set()
    await a.close()  # b takes over as with halt
    await until(lambda: b.trading() == {ETH}, timeout=TTL)
    await b.close()


async def test_redis_down_keeps_only_the_symbols_no_other_member_lists(
    instances: Instances, redis_server: RedisServer, redis: Redis
) -> None:
    with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        a = instances.start("a", proxy.port, (ETH, BTC), fallback_mode="single_instance")
        await until(lambda: a.trading() == {ETH, BTC}, timeout=10)
        b = instances.start("b", redis_server.port, (BTC,), fallback_mode="single_instance")
        await until(lambda: b.coordinator.status()["waiting_for"] == {BTC: "a"})
        await until(lambda: {m.id for m in a.coordinator.members} == {"a", "b"})
        eth_trader = next(t for t in a.service.traders if t.symbol == ETH)
        eth_fence = eth_trader._fence()

        proxy.cut()  # Redis is gone for a alone
        await until(lambda: a.lock.state == "single_instance", timeout=TTL)
        await until(lambda: a.coordinator.status()["kept_locally"] == [ETH], timeout=TTL)
        await until(lambda: a.trading() == {ETH}, timeout=TTL + 1)  # BTC stopped: b lists it
        await until(lambda: b.trading() == {BTC}, timeout=2 * TTL + 3)
        for _ in range(int(TTL / CHECK)):  # a claims nothing while Redis is down
            await asyncio.sleep(CHECK)
            assert a.trading() == {ETH} and a.coordinator.owned == {ETH}
        assert next(t for t in a.service.traders if t.symbol == ETH) is eth_trader

        proxy.heal()  # the kept lease lapsed in Redis: ETH is claimed again, grid re-read
        await until(lambda: a.lock.state == "distributed", timeout=3)
        await until(lambda: a.coordinator.status()["kept_locally"] == [], timeout=TTL)

        def restarted() -> bool:  # the old trader gone, a new one trading ETH
            traders = a.service.traders
            return eth_trader not in traders and [t.symbol for t in traders if t.trading] == [ETH]

        await until(restarted, timeout=TTL + 3)
        fence = a.service.traders[0]._fence()
        assert fence > eth_fence
        record = await recorded(redis, ETH, f'"owner":"a","state":"held","fence":{fence},')
        assert b'"shared":true,"database":"postgres"' in record
        assert a.sample("quantmesh_failovers_total", symbol=ETH) == 0  # its own symbol
        await until(lambda: a.coordinator.status()["waiting_for"] == {BTC: "b"}, timeout=3)
        assert a.trading() == {ETH} and b.trading() == {BTC}
        await asyncio.gather(a.close(), b.close())


async def test_a_short_outage_goes_on_under_the_same_lease(
    instances: Instances, redis_server: RedisServer, redis: Redis
) -> None:
    ttl = 6.0  # the outage ends well before the lease lapses in Redis
    released = '{"owner":"a","state":"released","fence":1,"until":0,"since":0}'
    await redis.hset(OWNERS, ETH, released)  # a clean stop before: no grace at start
    with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        a = instances.start("a", proxy.port, fallback_mode="single_instance", ttl=ttl)
        await until(lambda: a.trading() == {ETH})
        trader = a.service.traders[0]
        fence = trader._fence()
        proxy.cut()
        await until(lambda: a.coordinator.status()["kept_locally"] == [ETH], timeout=ttl)
        proxy.heal()
        await until(lambda: a.coordinator.status()["kept_locally"] == [], timeout=ttl)
        assert a.lock.state == "distributed"
        assert a.service.traders == [trader] and trader.trading and trader._fence() == fence
        assert a.sample("quantmesh_ownership_changes_total", symbol=ETH, event="lost") == 0
        await a.close()


async def recorded(redis: Redis, symbol: str, part: str, timeout: float = 3.0) -> bytes:
    """The ownership record of ``symbol`` once it contains ``part``."""
    for _ in range(int(timeout / 0.05)):
        record = await redis.hget(OWNERS, symbol)
        if record is not None and part.encode() in record:
            return record if isinstance(record, bytes) else record.encode()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{symbol}: no record with {part} but {record!r}")
