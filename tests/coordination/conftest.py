"""One Redis server for the coordination tests, flushed before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.coordination.support import Instances
from tests.lock.conftest import make_client
from tests.servers.redis import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = make_client(redis_server.port)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def instances(tmp_path: Path) -> AsyncIterator[Instances]:
    started = Instances(tmp_path)
    yield started
    await started.close()
