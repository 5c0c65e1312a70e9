"""RedisLock against a real redis-server: exclusion, expiry, ownership, fences, faults."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from quantmesh.errors import LockLost, LockTimeout, LockUnavailable
from quantmesh.lock.base import Lease
from quantmesh.lock.redis import RedisLock
from quantmesh.lock.renewal import renewed
from tests.servers.proxy import TcpProxy
from tests.servers.redis import RedisServer

from .conftest import make_client

KEY = "{order:simulated:ETHUSDT}:3"
NAME = "quantmesh:lock:" + KEY
FENCE = "quantmesh:lock:{order:simulated:ETHUSDT}:fence"


async def test_exactly_one_of_1000_concurrent_try_locks_from_two_lockers_wins(
    redis_server: RedisServer, redis: Redis
) -> None:
    a = RedisLock(make_client(redis_server.port, max_connections=200))
    b = RedisLock(make_client(redis_server.port, max_connections=200))
    try:
        results = await asyncio.gather(
            *((a if i % 2 else b).try_lock(KEY, 5.0) for i in range(1000))
        )
        winners = [lease for lease in results if lease is not None]
        assert len(winners) == 1
        assert await redis.get(NAME) == winners[0].token.encode()
    finally:
        await a.close()
        await b.close()


async def test_a_lease_expires_after_its_ttl(locker: RedisLock, redis: Redis) -> None:
    first = await locker.try_lock(KEY, 0.2)
    assert first is not None
    assert first.deadline < time.monotonic() + 0.2
    assert await locker.try_lock(KEY, 0.2) is None
    await asyncio.sleep(0.25)
    second = await locker.try_lock(KEY, 5.0)
    assert second is not None and second.fence > first.fence
    # The expired holder can neither release nor extend the new holder's lock.
    assert await locker.unlock(first) is False
    assert await locker.extend(first, 5.0) is None
    assert await redis.get(NAME) == second.token.encode()


async def test_only_the_holder_releases_or_extends(locker: RedisLock, redis: Redis) -> None:
    lease = await locker.try_lock(KEY, 5.0)
    assert lease is not None
    forged = Lease(KEY, "not-the-token", lease.fence, lease.deadline)
    assert await locker.unlock(forged) is False
    assert await locker.extend(forged, 60.0) is None
    assert await redis.get(NAME) == lease.token.encode()
    assert await redis.pttl(NAME) <= 5000

    extended = await locker.extend(lease, 60.0)
    assert extended is not None and extended.deadline > lease.deadline
    assert extended.fence == lease.fence and extended.token == lease.token
    assert await redis.pttl(NAME) > 5000  # extend replaces the TTL
    assert await locker.unlock(extended) is True
    assert await redis.exists(NAME) == 0
    assert await locker.unlock(extended) is False


async def test_fences_strictly_increase_across_holders_levels_and_a_lost_counter(
    redis_server: RedisServer, redis: Redis
) -> None:
    a = RedisLock(make_client(redis_server.port))
    b = RedisLock(make_client(redis_server.port))
    fences = []
    try:
        for i in range(40):
            locker = a if i % 3 else b
            lease = await locker.try_lock(f"{{order:simulated:ETHUSDT}}:{i % 4}", 5.0)
            assert lease is not None
            fences.append(lease.fence)
            assert await locker.unlock(lease)
            if i == 20:
                await redis.flushall()  # Redis forgot the counter (restart, failover)
        assert all(x < y for x, y in itertools.pairwise(fences))
        # Lock key and counter share the symbol's hash tag (one Cluster slot).
        assert await redis.exists(FENCE) == 1
    finally:
        await a.close()
        await b.close()


async def test_lock_waits_for_a_release_and_times_out_otherwise(locker: RedisLock) -> None:
    held = await locker.try_lock(KEY, 5.0)
    assert held is not None
    with pytest.raises(LockTimeout):
        await locker.lock(KEY, 5.0, timeout=0.1)
    asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(locker.unlock(held)))
    started = time.monotonic()
    lease = await locker.lock(KEY, 5.0, timeout=2.0)
    assert lease.fence > held.fence
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("steps", range(12))
async def test_an_acquire_cancelled_at_any_await_leaves_no_orphan(
    locker: RedisLock, redis: Redis, steps: int
) -> None:
    task = asyncio.create_task(locker.try_lock(KEY, 30.0))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    try:
        lease = await task
    except asyncio.CancelledError:
        lease = None
    if lease is not None:  # it finished before the cancel: the holder releases as usual
        assert await locker.unlock(lease)
    await locker.settle()
    assert await redis.exists(NAME) == 0  # not left for the 30 s TTL


async def test_an_acquire_cancelled_after_the_server_set_the_key_leaves_no_orphan(
    redis_server: RedisServer, redis: Redis
) -> None:
    with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        locker = RedisLock(make_client(proxy.port))
        try:
            await locker.client.execute_command("PING")  # connected before the delay
            proxy.delay = 0.2
            task = asyncio.create_task(locker.try_lock(KEY, 30.0))
            deadline = time.monotonic() + 3
            while not await redis.exists(NAME):  # the server set it; the reply is on its way
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            proxy.delay = 0.0
            await locker.settle()
            assert await redis.exists(NAME) == 0
        finally:
            await locker.close()


# From 1: a task cancelled before its first step never entered unlock() at all.
@pytest.mark.parametrize("steps", range(1, 12))
async def test_a_release_cancelled_at_any_await_still_releases(
    locker: RedisLock, redis: Redis, steps: int
) -> None:
    lease = await locker.try_lock(KEY, 30.0)
    assert lease is not None
    task = asyncio.create_task(locker.unlock(lease))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await locker.settle()
    assert await redis.exists(NAME) == 0


@pytest.mark.parametrize("steps", range(1, 12))
async def test_an_extend_cancelled_at_any_await_keeps_the_old_lease(
    locker: RedisLock, redis: Redis, steps: int
) -> None:
    lease = await locker.try_lock(KEY, 30.0)
    assert lease is not None
    task = asyncio.create_task(locker.extend(lease, 30.0))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    try:
        renewed = await task
    except asyncio.CancelledError:
        renewed = None
    assert await locker.unlock(renewed or lease)
    await locker.settle()
    assert await redis.exists(NAME) == 0


HOLDER = Path(__file__).with_name("holder.py")
ROOT = Path(__file__).resolve().parents[2]


def start_holder(port: int, ttl: float) -> subprocess.Popen[str]:
    """``holder.py`` in its own process: takes KEY, prints its fence, waits for a line."""
    return subprocess.Popen(
        [sys.executable, str(HOLDER), str(port), KEY, str(ttl)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_a_holder_frozen_past_its_ttl_cannot_touch_the_new_holders_lock(
    redis_server: RedisServer, redis: Redis, locker: RedisLock
) -> None:
    proc = start_holder(redis_server.port, ttl=0.5)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        old_fence = int((await asyncio.to_thread(proc.stdout.readline)).split()[0])
        os.kill(proc.pid, signal.SIGSTOP)
        await asyncio.sleep(0.6)  # past the holder's TTL
        lease = await locker.try_lock(KEY, 5.0)
        assert lease is not None and lease.fence > old_fence
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        seen = (await asyncio.to_thread(proc.stdout.readline)).strip()
        assert seen == "expired=True extended=False released=False"
        assert await redis.get(NAME) == lease.token.encode()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes


async def test_replies_delayed_beyond_the_ttl_mean_the_lease_is_lost(
    redis_server: RedisServer, redis: Redis
) -> None:
    with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        locker = RedisLock(make_client(proxy.port, socket_timeout=5.0))
        try:
            await locker.client.execute_command("PING")
            proxy.delay = 0.15  # each way: 0.3 s round trip against a 0.2 s TTL
            lease = await locker.try_lock(KEY, 0.2)
            assert lease is not None  # the server granted it ...
            assert time.monotonic() >= lease.deadline  # ... but it is gone on arrival
            await asyncio.sleep(0.2)

            proxy.delay = 0.0
            started = time.monotonic()
            with pytest.raises(LockLost):
                async with locker.renewed(KEY, 0.6) as held:
                    proxy.delay = 0.5  # the first renewal's reply comes after the deadline
                    try:
                        await asyncio.sleep(5)
                    finally:
                        interrupted = time.monotonic() - started
                        proxy.delay = 0.0
            assert interrupted < 1.0  # cancelled at the lease's deadline, not after the work
            assert not held.valid()
        finally:
            proxy.delay = 0.0
            await locker.close()


async def test_the_watchdog_keeps_a_long_hold_alive_and_releases_it(
    locker: RedisLock, redis: Redis
) -> None:
    async with renewed(locker, KEY, 0.3) as held:
        first = held.lease
        await asyncio.sleep(1.0)  # more than three TTLs
        assert held.valid() and held.check().fence == first.fence
        assert held.lease.deadline > first.deadline
        assert await redis.get(NAME) == first.token.encode()
    assert await redis.exists(NAME) == 0


async def test_a_hold_taken_over_cancels_the_work_with_lock_lost(
    locker: RedisLock, redis: Redis
) -> None:
    reached_end = False
    with pytest.raises(LockLost):
        async with renewed(locker, KEY, 0.3):
            await redis.set(NAME, "somebody-else", px=5000)  # the key was taken over
            await asyncio.sleep(2)
            reached_end = True
    assert not reached_end
    assert await redis.get(NAME) == b"somebody-else"  # the other holder's key survives


async def test_an_unreachable_server_raises_lock_unavailable_without_the_password() -> None:
    with RedisServer(password="s3cret-pw") as server:
        locker = RedisLock(make_client(server.port, password="s3cret-pw"))
        try:
            assert await locker.try_lock(KEY, 1.0) is not None
            server.kill()
            started = time.monotonic()
            with pytest.raises(LockUnavailable) as caught:
                await locker.try_lock("{order:simulated:ETHUSDT}:4", 1.0)
            assert time.monotonic() - started < 2.5  # socket timeouts bound the call
            assert "s3cret-pw" not in str(caught.value)
        finally:
            await locker.close()


async def test_a_replica_fails_the_health_check_and_grants_nothing(
    redis_server: RedisServer,
) -> None:
    with RedisServer(extra=("--replicaof", "127.0.0.1", str(redis_server.port))) as replica:
        locker = RedisLock(make_client(replica.port))
        try:
            with pytest.raises(LockUnavailable, match="ReadOnlyError"):
                await locker.ping()
            with pytest.raises(LockUnavailable):
                await locker.try_lock(KEY, 1.0)
        finally:
            await locker.close()
    master = RedisLock(make_client(redis_server.port))
    try:
        await master.ping()  # the master passes
    finally:
        await master.close()
