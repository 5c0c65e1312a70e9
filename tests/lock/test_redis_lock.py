"""RedisLock against a real redis-server: what only Redis does (the shared behaviour of
every backend is in ``test_lock_backends``)."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from quantmesh.errors import LockUnavailable
from quantmesh.lock.redis import RedisLock
from tests.servers.redis import RedisServer

from .conftest import make_client

KEY = "{order:simulated:ETHUSDT}:3"
NAME = "quantmesh:lock:" + KEY
FENCE = "quantmesh:lock:{order:simulated:ETHUSDT}:fence"


async def test_extend_replaces_the_ttl(locker: RedisLock, redis: Redis) -> None:
    lease = await locker.try_lock(KEY, 5.0)
    assert lease is not None
    assert await redis.pttl(NAME) <= 5000
    extended = await locker.extend(lease, 60.0)
    assert extended is not None and extended.deadline > time.monotonic() + 59
    assert await redis.pttl(NAME) > 5000


async def test_fences_come_from_the_symbols_counter_beside_its_keys(
    locker: RedisLock, redis: Redis
) -> None:
    lease = await locker.try_lock(KEY, 5.0)
    assert lease is not None
    # Lock key and counter share the symbol's hash tag (one Cluster slot).
    assert await redis.exists(FENCE) == 1
    assert await redis.get(FENCE) == str(lease.fence).encode()


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
