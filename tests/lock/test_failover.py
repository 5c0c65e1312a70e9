"""FailoverLock and the trader against a Redis server the tests kill and restart."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from decimal import Decimal

import pytest
import structlog.testing

from quantmesh.domain import Order
from quantmesh.errors import LockUnavailable
from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.lock.base import Lease
from quantmesh.lock.failover import FIRST_RETRY, FailoverLock, FallbackMode
from quantmesh.lock.health import lock_check
from quantmesh.lock.redis import RedisLock
from quantmesh.lock.renewal import RenewedLease, renewed
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.repository import SqlRepository
from tests.servers.redis import RedisServer
from tests.trading.support import SYMBOL, running_trader, until

from .conftest import make_client

KEY = "{order:simulated:ETHUSDT}:1"
INTERVAL = 0.1  # health_check_interval


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A server of this test's own: the tests kill it."""
    with RedisServer() as srv:
        yield srv


def failover(server: RedisServer, mode: FallbackMode, metrics: Metrics) -> FailoverLock:
    client = make_client(server.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    return FailoverLock(
        RedisLock(client), fallback_mode=mode, health_check_interval=INTERVAL, metrics=metrics
    )


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_halt_grants_nothing_while_redis_is_down_and_recovers(server: RedisServer) -> None:
    metrics = Metrics()
    locker = failover(server, "halt", metrics)
    try:
        await locker.start()  # one check, then the periodic ones
        assert locker.state == "distributed" and lock_check(locker.health()).ok
        before = await locker.try_lock(KEY, 5.0)
        assert before is not None and locker.state == "distributed"
        server.kill()
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(LockUnavailable):
                await locker.try_lock(KEY, 5.0)  # the call itself fails closed
            await until_state(locker, "halted")
            with pytest.raises(LockUnavailable, match="fallback_mode halt"):
                await locker.try_lock("{order:simulated:ETHUSDT}:2", 5.0)
        assert not locker.ready and not locker.healthy
        check = lock_check(locker.health())
        assert not check.ok and "fallback_mode halt" in check.detail
        assert [e for e in logs if e["event"] == "lock_backend_down_halted"]
        assert gauge(metrics, "quantmesh_lock_backend_up") == 0
        assert gauge(metrics, "quantmesh_lock_mode", mode="halted") == 1
        assert gauge(metrics, "quantmesh_lock_mode", mode="distributed") == 0

        server.start()  # Redis back, empty
        await until_state(locker, "distributed")
        after = await locker.try_lock(KEY, 5.0)
        assert after is not None and after.fence > before.fence
        assert locker.ready and gauge(metrics, "quantmesh_lock_backend_up") == 1
        assert lock_check(locker.health()).ok
    finally:
        await locker.close()


async def test_single_instance_falls_back_to_a_local_lock_and_back(server: RedisServer) -> None:
    metrics = Metrics()
    locker = failover(server, "single_instance", metrics)
    try:
        assert await locker.try_lock(KEY, 5.0) is not None
        server.kill()
        with structlog.testing.capture_logs() as logs:
            await locker.check()
        assert locker.state == "single_instance" and locker.ready
        assert lock_check(locker.health()).ok and "local lock" in lock_check(locker.health()).detail
        assert [e for e in logs if e["event"] == "lock_backend_down_single_instance"]
        assert logs[0]["log_level"] == "critical"
        local = await locker.try_lock(KEY, 5.0)
        assert local is not None
        assert await locker.try_lock(KEY, 5.0) is None  # still mutual exclusion in-process
        assert gauge(metrics, "quantmesh_lock_mode", mode="single_instance") == 1
        async with locker.renewed("{order:simulated:ETHUSDT}:9", 0.3) as held:
            await asyncio.sleep(0.25)  # renewed by the watchdog on the local lock
            assert held.valid()

        server.start()
        await until_state(locker, "distributed")
        assert await locker.unlock(local)  # a local lease is released where it was granted
        remote = await locker.try_lock(KEY, 5.0)
        assert remote is not None and remote.fence > local.fence
    finally:
        await locker.close()


async def until_state(locker: FailoverLock, state: str, timeout: float = 5.0) -> None:
    await until(lambda: locker.state == state, timeout)


async def test_a_halt_after_a_sub_second_blip_ends_soon_after_redis_answers(
    server: RedisServer,
) -> None:
    """Redis gone for a fraction of a second: the halted instance probes with a short
    backoff and trades again within about a second, not after ``health_check_interval``."""
    client = make_client(server.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    locker = FailoverLock(RedisLock(client), fallback_mode="halt", health_check_interval=10.0)
    try:
        await locker.start()
        assert await locker.try_lock(KEY, 5.0) is not None
        server.kill()
        killed = time.monotonic()
        with pytest.raises(LockUnavailable):
            await locker.try_lock("{order:simulated:ETHUSDT}:2", 5.0)
        await until_state(locker, "halted", 1.0)  # the call's own check found Redis down
        server.start()  # the same port, empty
        answering = time.monotonic()
        assert answering - killed < 1.0, "the restart itself took too long for this test"
        with pytest.raises(LockUnavailable, match="fallback_mode halt"):
            await locker.try_lock("{order:simulated:ETHUSDT}:3", 5.0)  # still halted
        await until_state(locker, "distributed", 1.5)
        lease = await locker.try_lock("{order:simulated:ETHUSDT}:4", 5.0)
        assert lease is not None
        assert time.monotonic() - answering < 1.5
    finally:
        await locker.close()


class Backend:
    """A lock backend whose health check fails while ``down``; records when it was asked."""

    def __init__(self) -> None:
        self.down = False
        self.pings: list[float] = []

    async def ping(self) -> None:
        self.pings.append(time.monotonic())
        if self.down:
            raise LockUnavailable("backend down")

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        raise LockUnavailable("backend down")

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        raise LockUnavailable("backend down")

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        return renewed(self, key, ttl, timeout)

    async def unlock(self, lease: Lease) -> bool:
        return False

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        return None

    async def close(self) -> None:
        return None


async def test_checks_while_down_back_off_from_a_tenth_of_a_second_to_the_interval() -> None:
    backend = Backend()
    locker = FailoverLock(backend, fallback_mode="halt", health_check_interval=0.8)
    try:
        assert locker.next_check_in() == 0.8
        await locker.start()
        backend.down = True
        await locker.check()
        assert locker.state == "halted" and locker.next_check_in() == FIRST_RETRY
        first = len(backend.pings) - 1  # the failed check
        await asyncio.sleep(2.4)  # checks due at +0.1, +0.3, +0.7, +1.5, +2.3 (capped)
        probes = backend.pings[first:]
        gaps = [b - a for a, b in itertools.pairwise(probes)]
        assert 3 <= len(gaps) <= 5, gaps
        for gap, due in zip(gaps, (0.1, 0.2, 0.4, 0.8, 0.8), strict=False):
            assert due * 0.9 <= gap <= due + 0.3, gaps
        assert locker.next_check_in() == 0.8  # capped at the interval

        backend.down = False
        await until_state(locker, "distributed", 1.5)
        assert locker.next_check_in() == 0.8
        ok_at = backend.pings[-1]
        await asyncio.sleep(0.5)
        assert backend.pings[-1] == ok_at  # healthy again: back to the interval
    finally:
        await locker.close()


async def test_a_trader_in_halt_mode_places_nothing_while_redis_is_down(
    server: RedisServer, exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    locker = failover(server, "halt", Metrics())
    try:
        async with running_trader(exchange, repository, locker=locker) as run:
            exchange.set_price(SYMBOL, Decimal(2001))
            await until(lambda: len(run.open_ids()) == 3)  # the buy window, under Redis locks
            stored = await stored_open_orders(repository, 3)
            fences = sorted(o.lock_fence or 0 for o in stored)
            assert len(set(fences)) == 3 and fences[0] > 0  # the fence went with the write
            server.kill()
            placed = len(exchange.engine.all_orders())
            exchange.set_price(SYMBOL, Decimal(1975))  # fills the window, wants new orders
            label = "order:simulated:ETHUSDT"
            await until(lambda: run.metric(
                "quantmesh_lock_acquire_total", key=label, status="unavailable", purpose="order"
            ) >= 3)  # fmt: skip
            await asyncio.sleep(0.3)
            assert len(exchange.engine.all_orders()) == placed  # nothing placed, nothing cancelled
            assert locker.state == "halted"

            server.start()
            await until_state(locker, "distributed")
            await placed_more(exchange, placed)  # the next tick trades again
    finally:
        await locker.close()


async def test_a_trader_in_single_instance_mode_keeps_trading_while_redis_is_down(
    server: RedisServer, exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    locker = failover(server, "single_instance", Metrics())
    try:
        async with running_trader(exchange, repository, locker=locker) as run:
            exchange.set_price(SYMBOL, Decimal(2001))
            await until(lambda: len(run.open_ids()) == 3)
            server.kill()
            await locker.check()
            placed = len(exchange.engine.all_orders())
            await placed_more(exchange, placed, Decimal(1975))
            assert locker.state == "single_instance"
    finally:
        await locker.close()


async def stored_open_orders(repository: SqlRepository, count: int) -> list[Order]:
    """The symbol's open orders once the repository holds ``count`` (the trader stores an
    order just after the exchange accepted it)."""
    deadline = time.monotonic() + 5.0
    while len(stored := await repository.get_open_orders(SYMBOL)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(stored)} open orders stored, expected {count}")
        await asyncio.sleep(0.01)
    return stored


async def placed_more(
    exchange: SimulatedExchange, placed: int, price: Decimal = Decimal(1975)
) -> None:
    """Tick until the exchange has seen more than ``placed`` orders."""
    for _ in range(100):
        exchange.set_price(SYMBOL, price)
        await asyncio.sleep(0.05)
        if len(exchange.engine.all_orders()) > placed:
            return
    raise AssertionError("no order placed after the lock backend came back")
