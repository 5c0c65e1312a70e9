"""Fixtures of the lock tests: one Redis, etcd, PostgreSQL and MariaDB server per session,
a fresh client per test; ``lock_backend`` runs a test once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from quantmesh.lock.redis import RedisLock
from tests.servers.etcd import EtcdServer
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer
from tests.trading.conftest import exchange, repository

if TYPE_CHECKING:
    from .backends import LockBackend

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


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture(scope="session")
def lock_postgres() -> Iterator[PostgresServer]:
    from .backends import create_lock_table

    with PostgresServer() as server:
        create_lock_table(server)
        yield server


@pytest.fixture(scope="session")
def lock_mariadb() -> Iterator[MariaDBServer]:
    from .backends import create_lock_table

    with MariaDBServer() as server:
        create_lock_table(server)
        yield server


@pytest.fixture(params=["redis", "etcd", "postgres", "mysql"])
async def lock_backend(request: pytest.FixtureRequest) -> AsyncIterator[LockBackend]:
    """Each backend on its session's server, emptied; the lockers it made are closed."""
    from .backends import EtcdBackend, RedisBackend, SqlBackend  # they use make_client above

    backend: RedisBackend | EtcdBackend | SqlBackend
    client: Redis | None = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        client = make_client(server.port)
        backend = RedisBackend(server, client)
    elif request.param == "etcd":
        backend = EtcdBackend(request.getfixturevalue("etcd_server"))
    elif request.param == "postgres":
        backend = SqlBackend("postgres", request.getfixturevalue("lock_postgres"))
    else:
        backend = SqlBackend("mysql", request.getfixturevalue("lock_mariadb"))
    await backend.clear()
    try:
        yield backend
    finally:
        for lock in backend.made:
            await lock.close()
        if client is not None:
            await client.aclose()
        if isinstance(backend, SqlBackend):
            await backend.close()
