"""Fixtures of the lock tests: one Redis server per session, a fresh client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from quantmesh.lock.redis import RedisLock
from tests.servers.redis import RedisServer
from tests.trading.conftest import exchange, repository

__all__ = ["exchange", "repository"]  # the trader tests' fixtures, shared here


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def make_client(port: int, max_connections: int = 50, **kwargs: object) -> Redis:
    """A client as ``quantmesh.lock.connection`` builds them: a blocking pool, timeouts."""
    options: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, **kwargs}
    pool = BlockingConnectionPool(
        host="127.0.0.1", port=port, max_connections=max_connections, timeout=5.0, **options
    )
    return Redis.from_pool(pool)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = make_client(redis_server.port)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def locker(redis_server: RedisServer) -> AsyncIterator[RedisLock]:
    lock = RedisLock(make_client(redis_server.port))
    yield lock
    await lock.close()
