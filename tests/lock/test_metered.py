"""MeteredLock: the lock metrics of any backend, per purpose, on a real LocalLock, real
Redis servers and a failing fake."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest

from quantmesh.errors import LockError, LockTimeout, LockUnavailable
from quantmesh.lock.base import Lease
from quantmesh.lock.failover import FailoverLock
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.local import LocalLock
from quantmesh.lock.metered import MeteredLock, Purpose, key_label
from quantmesh.lock.nop import NopLock
from quantmesh.lock.redis import RedisLock
from quantmesh.observability.metrics import Metrics
from tests.servers.redis import RedisServer
from tests.support import FakeClock

from .conftest import make_client

KEYS = LockKeys("binance")
LABEL = KEYS.label("ETH/USDT")  # order:binance:ETHUSDT
LEVEL = KEYS.order_key("ETH/USDT", 17, Decimal(2017))


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def acquired(metrics: Metrics, status: str, purpose: Purpose = "order") -> float:
    return value(metrics, "quantmesh_lock_acquire_total", key=LABEL, status=status, purpose=purpose)


def held(metrics: Metrics, purpose: Purpose = "order") -> tuple[float, float]:
    """(count, sum) of the hold durations observed."""
    labels = {"key": LABEL, "purpose": purpose}
    return (
        value(metrics, "quantmesh_lock_hold_duration_seconds_count", **labels),
        value(metrics, "quantmesh_lock_hold_duration_seconds_sum", **labels),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
def backend(clock: FakeClock) -> LocalLock:
    return LocalLock(clock=clock)


def test_every_lock_key_of_a_symbol_has_the_senders_label() -> None:
    keys = LockKeys("binance", "exact")
    for key in (
        LEVEL,
        keys.order_key("ETH/USDT", 3, Decimal("2001.5")),
        LockKeys("binance", "symbol").order_key("ETH/USDT", 3, Decimal(1)),
        KEYS.owner_key("ETH/USDT"),
        KEYS.reconcile_key("ETH/USDT"),
    ):
        assert key_label(key) == LABEL, key
    assert key_label("plain-key") == "plain-key"
    assert key_label("{}:x") == "{}:x"


async def test_grants_conflicts_and_hold_time_are_recorded(
    backend: LocalLock, clock: FakeClock
) -> None:
    metrics = Metrics()
    locker = MeteredLock(backend, metrics=metrics, purpose="order", clock=clock)
    lease = await locker.try_lock(LEVEL, 5.0)
    assert lease is not None and locker.held == 1
    assert await locker.try_lock(LEVEL, 5.0) is None  # the same level, held
    assert acquired(metrics, "success") == 1
    assert acquired(metrics, "conflict") == 1
    assert value(metrics, "quantmesh_lock_conflict_total", key=LABEL, purpose="order") == 1

    clock.now += 0.25
    assert await locker.unlock(lease)
    assert held(metrics) == (1, 0.25)
    assert locker.held == 0
    assert not await locker.unlock(lease)  # a second release observes nothing more
    assert held(metrics) == (1, 0.25)
    assert await backend.try_lock(LEVEL, 5.0) is not None  # really released


async def test_a_lock_that_times_out_waiting_is_a_conflict(
    backend: LocalLock, clock: FakeClock
) -> None:
    metrics = Metrics()
    locker = MeteredLock(backend, metrics=metrics, purpose="ownership", clock=clock)
    owner = KEYS.owner_key("ETH/USDT")
    assert await backend.try_lock(owner, 30.0) is not None  # another holder
    with pytest.raises(LockTimeout):
        await locker.lock(owner, 30.0, 0.0)
    assert acquired(metrics, "conflict", "ownership") == 1
    assert value(metrics, "quantmesh_lock_conflict_total", key=LABEL, purpose="ownership") == 1
    assert acquired(metrics, "conflict", "order") == 0  # purposes are apart


class FailingLock:
    """A backend whose every call fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        raise self.error

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        raise self.error

    async def unlock(self, lease: Lease) -> bool:
        raise self.error

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        raise self.error

    async def close(self) -> None:
        raise AssertionError("a MeteredLock never closes the lock it wraps")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (LockUnavailable("redis down"), "unavailable"),
        (LockError("redis says NOSCRIPT"), "error"),
        (RuntimeError("a bug in a backend"), "error"),
    ],
    ids=["unavailable", "lock-error", "other"],
)
async def test_failures_are_counted_by_kind_and_raised_unchanged(
    error: Exception, status: str
) -> None:
    metrics = Metrics()
    locker = MeteredLock(FailingLock(error), metrics=metrics, purpose="reconcile")
    key = KEYS.reconcile_key("ETH/USDT")
    with pytest.raises(type(error)) as raised:
        await locker.try_lock(key, 30.0)
    assert raised.value is error
    with pytest.raises(type(error)):
        await locker.lock(key, 30.0, 1.0)
    assert acquired(metrics, status, "reconcile") == 2
    assert acquired(metrics, "success", "reconcile") == 0
    assert value(metrics, "quantmesh_lock_conflict_total", key=LABEL, purpose="reconcile") == 0
    await locker.close()


async def test_a_lease_held_with_renewals_is_observed_once_from_grant_to_release() -> None:
    metrics = Metrics()
    locker = MeteredLock(LocalLock(), metrics=metrics, purpose="ownership")
    async with locker.renewed(KEYS.owner_key("ETH/USDT"), 0.3) as lease:
        await asyncio.sleep(0.45)  # renewed by the watchdog every 0.1 s
        assert lease.valid()
    count, total = held(metrics, "ownership")
    assert count == 1 and 0.45 <= total < 1.5
    assert acquired(metrics, "success", "ownership") == 1
    assert locker.held == 0


async def test_a_lost_lease_is_observed_when_its_extension_is_refused(
    backend: LocalLock, clock: FakeClock
) -> None:
    metrics = Metrics()
    locker = MeteredLock(backend, metrics=metrics, purpose="ownership", clock=clock)
    owner = KEYS.owner_key("ETH/USDT")
    lease = await locker.try_lock(owner, 1.0)
    assert lease is not None
    clock.now += 0.5
    renewed = await locker.extend(lease, 1.0)  # renewed: still the same hold
    assert renewed is not None and renewed.deadline > lease.deadline
    assert held(metrics, "ownership") == (0, 0)
    clock.now += 1.5  # expired, and taken by another holder
    assert await backend.try_lock(owner, 1.0) is not None
    assert await locker.extend(renewed, 1.0) is None
    assert held(metrics, "ownership") == (1, 2.0)
    assert locker.held == 0
    assert not await locker.unlock(renewed)  # nothing more to observe
    assert held(metrics, "ownership") == (1, 2.0)


async def test_leases_sharing_a_token_are_told_apart_by_their_fence(clock: FakeClock) -> None:
    """NopLock hands every lease the same token."""
    metrics = Metrics()
    locker = MeteredLock(NopLock(), metrics=metrics, purpose="order", clock=clock)
    first = await locker.try_lock(LEVEL, 5.0)
    clock.now += 1.0
    second = await locker.try_lock(LEVEL, 5.0)
    assert first is not None and second is not None and first.token == second.token
    clock.now += 1.0
    await locker.unlock(second)
    await locker.unlock(first)
    assert held(metrics) == (2, 3.0)


async def test_leases_dropped_past_their_deadline_are_swept(
    backend: LocalLock, clock: FakeClock
) -> None:
    locker = MeteredLock(backend, metrics=Metrics(), purpose="order", clock=clock)
    for level in range(10_000):
        assert await locker.try_lock(f"{{{LABEL}}}:{level}", 1.0) is not None
    clock.now += 2.0  # every one expired, never released
    assert await locker.try_lock(LEVEL, 1.0) is not None
    assert locker.held == 1


def test_an_unknown_purpose_is_refused() -> None:
    with pytest.raises(ValueError, match="purpose"):
        MeteredLock(NopLock(), metrics=Metrics(), purpose="orders")  # type: ignore[arg-type]


# --- real Redis ---------------------------------------------------------------------------


async def test_two_instances_on_one_redis_record_success_and_conflict(
    redis_server: RedisServer,
) -> None:
    ours, theirs = Metrics(), Metrics()
    a = MeteredLock(RedisLock(make_client(redis_server.port)), metrics=ours, purpose="order")
    b = MeteredLock(RedisLock(make_client(redis_server.port)), metrics=theirs, purpose="order")
    try:
        key = KEYS.order_key("ETH/USDT", 901, Decimal(0))  # a level no other test uses
        lease = await a.try_lock(key, 5.0)
        assert lease is not None
        assert await b.try_lock(key, 5.0) is None
        assert await a.unlock(lease)
        assert acquired(ours, "success") == 1 and held(ours)[0] == 1
        assert acquired(theirs, "conflict") == 1
        assert value(theirs, "quantmesh_lock_conflict_total", key=LABEL, purpose="order") == 1
    finally:
        await a.inner.close()
        await b.inner.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def test_a_redis_that_is_down_counts_as_unavailable(own_redis: RedisServer) -> None:
    """Wrapped around the daemon's lock: the call that finds Redis gone and the calls
    refused while halted are all ``unavailable``."""
    metrics = Metrics()
    client = make_client(own_redis.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    failover = FailoverLock(RedisLock(client), fallback_mode="halt", health_check_interval=10.0)
    locker = MeteredLock(failover, metrics=metrics, purpose="reconcile")
    try:
        key = KEYS.reconcile_key("ETH/USDT")
        lease = await locker.try_lock(key, 30.0)
        assert lease is not None
        own_redis.kill()
        with pytest.raises(LockUnavailable):
            await locker.unlock(lease)  # the hold still ended here
        await failover.check()
        assert failover.state == "halted"
        with pytest.raises(LockUnavailable, match="fallback_mode halt"):
            await locker.try_lock(key, 30.0)
        with pytest.raises(LockUnavailable, match="fallback_mode halt"):
            await locker.lock(key, 30.0, 1.0)
        assert acquired(metrics, "unavailable", "reconcile") == 2
        assert acquired(metrics, "success", "reconcile") == 1
        assert held(metrics, "reconcile")[0] == 1
    finally:
        await failover.close()
