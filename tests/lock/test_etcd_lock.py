"""EtcdLock against real etcd processes: what only etcd does (its leases, its members); the
behaviour every backend shares is in ``test_lock_backends``."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from quantmesh.errors import LockError, LockUnavailable
from quantmesh.lock.etcd import EtcdGateway, EtcdLock
from quantmesh.lock.failover import FailoverLock
from quantmesh.lock.health import lock_check
from tests.servers.etcd import EtcdCluster, EtcdServer, request
from tests.support import free_port

KEY = "{order:simulated:ETHUSDT}:3"
NAME = base64.b64encode(f"quantmesh:lock:{KEY}".encode()).decode()


def lock_on(*urls: str, timeout: float = 1.0) -> EtcdLock:
    return EtcdLock(EtcdGateway(urls, request_timeout=timeout, connect_timeout=timeout))


def lease_of_key(server: EtcdServer) -> dict[str, Any]:
    """The lease that ``KEY`` is attached to, as the server sees it."""
    kvs = request(server.url, "/v3/kv/range", {"key": NAME}).get("kvs", [])
    assert kvs, "the key does not exist"
    return request(server.url, "/v3/lease/timetolive", {"ID": kvs[0]["lease"]})


@pytest.fixture
def server() -> Iterator[EtcdServer]:
    """A member of this test's own: the tests kill it."""
    with EtcdServer() as srv:
        yield srv


@pytest.fixture
async def locker(etcd_server: EtcdServer) -> AsyncIterator[EtcdLock]:
    request(etcd_server.url, "/v3/kv/deleterange", {"key": "AA==", "range_end": "AA=="})
    lock = lock_on(etcd_server.url)
    yield lock
    await lock.close()


@pytest.mark.timeout(10)
async def test_a_lease_is_granted_for_whole_seconds_and_revoked_on_release(
    locker: EtcdLock, etcd_server: EtcdServer
) -> None:
    lease = await locker.try_lock(KEY, 2.5)
    assert lease is not None
    assert lease.deadline < time.monotonic() + 2.5  # the holder counts what it asked for
    assert int(lease_of_key(etcd_server)["grantedTTL"]) == 3  # etcd, whole seconds up
    lease_id = int(lease_of_key(etcd_server)["ID"])
    assert await locker.unlock(lease)
    gone = request(etcd_server.url, "/v3/lease/timetolive", {"ID": str(lease_id)})
    assert int(gone["TTL"]) == -1  # the lease itself is revoked, not left to expire


@pytest.mark.timeout(10)
async def test_extend_renews_for_the_granted_ttl_and_never_promises_more(
    locker: EtcdLock, etcd_server: EtcdServer
) -> None:
    lease = await locker.try_lock(KEY, 5.0)
    assert lease is not None
    await asyncio.sleep(1.1)
    assert int(lease_of_key(etcd_server)["TTL"]) < 5
    started = time.monotonic()
    extended = await locker.extend(lease, 60.0)
    assert extended is not None and extended.deadline > lease.deadline
    assert extended.deadline <= started + 5.0  # etcd keeps the TTL of the grant
    assert int(lease_of_key(etcd_server)["TTL"]) >= 4  # re-armed from now


@pytest.mark.timeout(10)
async def test_a_try_that_finds_the_key_held_revokes_its_unused_lease(
    locker: EtcdLock, etcd_server: EtcdServer
) -> None:
    held = await locker.try_lock(KEY, 30.0)
    assert held is not None
    before = request(etcd_server.url, "/v3/lease/leases", {}).get("leases", [])
    for _ in range(5):
        assert await locker.try_lock(KEY, 30.0) is None
    await locker.settle()
    after = request(etcd_server.url, "/v3/lease/leases", {}).get("leases", [])
    assert len(after) == len(before)  # none of the five left for its 30 s


@pytest.mark.timeout(30)
async def test_a_crashed_member_comes_back_with_its_locks_and_fences(server: EtcdServer) -> None:
    a, b = lock_on(server.url), lock_on(server.url)
    try:
        held = await a.try_lock(KEY, 30.0)
        assert held is not None
        server.kill()
        with pytest.raises(LockUnavailable):
            await b.try_lock(KEY, 30.0)
        server.start()
        assert await b.try_lock(KEY, 30.0) is None  # still held: leases are on disk
        extended = await a.extend(held, 30.0)
        assert extended is not None
        other = await b.try_lock("{order:simulated:ETHUSDT}:4", 30.0)
        assert other is not None and other.fence > held.fence
        assert await a.unlock(extended)
    finally:
        await a.close()
        await b.close()


@pytest.mark.timeout(20)
async def test_an_unreachable_member_fails_closed_and_the_health_check_says_so(
    server: EtcdServer,
) -> None:
    locker = lock_on(server.url, timeout=0.5)
    try:
        await locker.start()
        assert lock_check(locker.health()).ok
        lease = await locker.try_lock(KEY, 30.0)
        assert lease is not None
        server.kill()
        started = time.monotonic()
        for call in (
            locker.try_lock("{order:simulated:ETHUSDT}:4", 5.0),
            locker.extend(lease, 30.0),
            locker.unlock(lease),
            locker.ping(),
        ):
            with pytest.raises(LockUnavailable):
                await call
        assert time.monotonic() - started < 2.0  # refused at once, nothing waits
        health = locker.health()
        assert health.backend == "etcd" and health.mode == "halted"
        assert not lock_check(health).ok and "etcd health check failed" in health.reason
        await locker.settle()  # the background revoke of the failed release gives up

        server.start()
        await locker.ping()
        assert locker.health().mode == "distributed"
        assert await locker.unlock(lease)  # the release that failed, done now
    finally:
        await locker.close()


@pytest.mark.timeout(20)
async def test_a_failover_lock_on_etcd_halts_while_it_is_down_and_recovers(
    server: EtcdServer,
) -> None:
    etcd = lock_on(server.url, timeout=0.5)
    locker = FailoverLock(etcd, fallback_mode="halt", health_check_interval=0.1)
    try:
        await locker.start()
        assert locker.healthy
        server.kill()
        deadline = time.monotonic() + 5
        while locker.state != "halted":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        with pytest.raises(LockUnavailable):
            await locker.try_lock(KEY, 5.0)
        server.start()
        while not locker.healthy:
            assert time.monotonic() < deadline + 10
            await asyncio.sleep(0.05)
        assert await locker.try_lock(KEY, 5.0) is not None
    finally:
        await locker.close()


@pytest.mark.timeout(60)
async def test_one_member_of_three_lost_locks_go_on_two_lost_nothing_is_granted() -> None:
    with EtcdCluster() as cluster:
        a = lock_on(*cluster.urls, timeout=0.5)
        b = lock_on(*reversed(cluster.urls), timeout=0.5)
        try:
            held = await a.try_lock(KEY, 30.0)
            assert held is not None

            # The leader dies: after an election, the other two grant and renew as before.
            first = cluster.leader()
            first.kill()
            deadline = time.monotonic() + 10
            while True:
                try:
                    lease = await b.try_lock("{order:simulated:ETHUSDT}:4", 5.0)
                    break
                except LockUnavailable:  # only while the two elect a new leader
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert lease is not None and lease.fence > held.fence
            assert await b.unlock(lease)
            fences = [held.fence]
            for n in range(20):
                locker = a if n % 2 else b
                lease = await locker.try_lock(f"{{order:simulated:ETHUSDT}}:{5 + n % 3}", 5.0)
                assert lease is not None
                fences.append(lease.fence)
                assert await locker.unlock(lease)
            assert fences == sorted(set(fences))
            assert await b.try_lock(KEY, 5.0) is None  # still held across the election
            renewed = await a.extend(held, 30.0)
            assert renewed is not None

            # A second member dies: no quorum, nothing granted or renewed, never a lease.
            second = next(m for m in cluster.members if m.process.running)
            second.kill()
            started = time.monotonic()
            for locker in (a, b):
                with pytest.raises(LockUnavailable):
                    await locker.try_lock("{order:simulated:ETHUSDT}:9", 5.0)
                with pytest.raises(LockUnavailable):
                    await locker.extend(renewed, 30.0)
                with pytest.raises(LockUnavailable):
                    await locker.ping()
            assert time.monotonic() - started < 6 * 0.5 + 2  # each bounded by its timeout

            # One comes back: a quorum again, and the lock held all along is still held.
            second.start()
            deadline = time.monotonic() + 15
            while True:
                try:
                    await b.ping()
                    break
                except LockUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert await b.try_lock(KEY, 5.0) is None
            again = await a.extend(renewed, 30.0)
            assert again is not None
            assert await a.unlock(again)
        finally:
            await a.close()
            await b.close()


def test_an_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError) as caught:
        EtcdGateway(["http://root:s3cret-pw@127.0.0.1:2379"])
    assert "s3cret-pw" not in str(caught.value)
    with pytest.raises(ValueError):
        EtcdGateway([])
    with pytest.raises(ValueError):
        EtcdGateway(["127.0.0.1:2379"])  # no scheme


class FakeClient:
    """Answers every request with ``reply``."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply

    async def call(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        return self.reply

    async def close(self) -> None:
        return None  # nothing to close: no connection was opened


@pytest.mark.parametrize("reply", [{}, {"ID": "not-a-number"}, {"ID": "1", "TTL": None}])
async def test_a_reply_etcd_would_not_send_is_a_lock_error_and_grants_nothing(
    reply: dict[str, Any],
) -> None:
    locker = EtcdLock(FakeClient(reply))
    with pytest.raises(LockError):
        await locker.try_lock(KEY, 5.0)
    await locker.close()


async def test_a_member_that_is_not_etcd_is_unavailable() -> None:
    port = free_port()  # nothing listens: refused on each try
    locker = lock_on(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(LockUnavailable, match="lease grant failed"):
            await locker.try_lock(KEY, 5.0)
    finally:
        await locker.close()
