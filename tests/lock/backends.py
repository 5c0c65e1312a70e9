"""The lock backends the shared lock tests run against, each on its real server.

A ``LockBackend`` makes lockers on its server (directly or through a proxy's port) and
looks at the server's side of a lock key without going through the lock: which token
holds it, whether it exists; it can write over a key as another holder would, and make
the server lose or keep what it knows across a crash.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateTable

from quantmesh.lock.base import DistributedLock
from quantmesh.lock.etcd import DEFAULT_PREFIX as ETCD_PREFIX
from quantmesh.lock.etcd import EtcdGateway, EtcdLock
from quantmesh.lock.redis import DEFAULT_PREFIX as REDIS_PREFIX
from quantmesh.lock.redis import RedisLock
from quantmesh.lock.sql import DEFAULT_PREFIX as SQL_PREFIX
from quantmesh.lock.sql import MY_NOW, PG_NOW, SqlLock
from quantmesh.storage.engine import DbType, create_engine_for
from quantmesh.storage.models import lock_leases
from tests.servers.etcd import EtcdServer, request
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

from .conftest import make_client


class TestedLock(DistributedLock, Protocol):
    """What the shared tests call on a backend's lock."""

    async def ping(self) -> None: ...

    async def settle(self) -> None: ...


class LockBackend(Protocol):
    name: str
    port: int  # the server's: a proxy in front of it forwards here
    # A ttl the server keeps for that long (etcd counts leases in whole seconds).
    short_ttl: float
    # How long after a lease's ttl the server may still hold its key (etcd revokes
    # expired leases in a loop, through Raft).
    expiry_slack: float

    def locker(self, port: int | None = None, *, slow: bool = False, pool: int = 50) -> Any:
        """A lock on the server (or on ``port``, a proxy); ``slow``: replies may take
        seconds; ``pool``: connections it may open. Closed by the fixture."""
        ...

    def holder_args(self) -> list[str]:
        """``holder.py``'s arguments naming this backend and its server."""
        ...

    async def token_of(self, key: str) -> str | None:
        """The token the server holds ``key`` for, ``None`` when it does not exist."""
        ...

    async def overwrite(self, key: str, value: str) -> None:
        """Another holder takes ``key`` over, as the server would let no lock do."""
        ...

    async def crash(self) -> None:
        """The server crashes and starts again, losing what it keeps only in memory."""
        ...

    async def clear(self) -> None: ...


class RedisBackend:
    name = "redis"
    short_ttl = 0.2
    expiry_slack = 0.1

    def __init__(self, server: RedisServer, client: Redis) -> None:
        self.server = server
        self.port = server.port
        self.client = client
        self.made: list[RedisLock] = []

    def locker(self, port: int | None = None, *, slow: bool = False, pool: int = 50) -> RedisLock:
        options: dict[str, Any] = {"socket_timeout": 5.0} if slow else {}
        lock = RedisLock(make_client(port or self.port, max_connections=pool, **options))
        self.made.append(lock)
        return lock

    def holder_args(self) -> list[str]:
        return ["redis", str(self.port)]

    async def token_of(self, key: str) -> str | None:
        value = await self.client.get(REDIS_PREFIX + key)
        return None if value is None else value.decode() if isinstance(value, bytes) else value

    async def overwrite(self, key: str, value: str) -> None:
        await self.client.set(REDIS_PREFIX + key, value, px=5000)

    async def crash(self) -> None:
        await self.client.flushall()  # no persistence: a restart forgets everything

    async def clear(self) -> None:
        await self.client.flushall()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdBackend:
    name = "etcd"
    short_ttl = 1.0
    expiry_slack = 1.5

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.port = server.port
        self.made: list[EtcdLock] = []

    def locker(self, port: int | None = None, *, slow: bool = False, pool: int = 50) -> EtcdLock:
        gateway = EtcdGateway(
            [f"http://127.0.0.1:{port or self.port}"],
            request_timeout=5.0 if slow else 1.0,
            pool_size=pool,
        )
        lock = EtcdLock(gateway)
        self.made.append(lock)
        return lock

    def holder_args(self) -> list[str]:
        return ["etcd", self.server.url]

    def kv(self, key: str) -> dict[str, Any] | None:
        reply = request(self.server.url, "/v3/kv/range", {"key": _b64(ETCD_PREFIX + key)})
        kvs: list[dict[str, Any]] = reply.get("kvs", [])
        return kvs[0] if kvs else None

    async def token_of(self, key: str) -> str | None:
        kv = self.kv(key)
        return None if kv is None else base64.b64decode(kv["value"]).decode()

    async def overwrite(self, key: str, value: str) -> None:
        body = {"key": _b64(ETCD_PREFIX + key), "value": _b64(value)}
        request(self.server.url, "/v3/kv/put", body)  # no lease: off the holder's

    async def crash(self) -> None:
        self.server.kill()  # etcd keeps its data on disk: it comes back with all of it
        self.server.start()

    async def clear(self) -> None:
        request(self.server.url, "/v3/kv/deleterange", {"key": "AA==", "range_end": "AA=="})


LOCK_DATABASE = "qm_lock"


def create_lock_table(server: PostgresServer | MariaDBServer) -> str:
    """The lock's database on ``server``, with its table (as the migration makes it); its
    SQLAlchemy URL.

    A commit reaches the operating system before it is answered, as on a production
    server (the test servers relax it): a killed server forgets no granted lease.
    """
    server.create_database(LOCK_DATABASE)
    if isinstance(server, PostgresServer):
        from sqlalchemy.dialects.postgresql.base import PGDialect

        pg = PGDialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
        server.query(str(CreateTable(lock_leases).compile(dialect=pg)), LOCK_DATABASE)
        server.query(f'ALTER DATABASE "{LOCK_DATABASE}" SET synchronous_commit = on')
        server.query("CHECKPOINT")
    else:
        from sqlalchemy.dialects.mysql.base import MySQLDialect

        server.execute(str(CreateTable(lock_leases).compile(dialect=MySQLDialect())), LOCK_DATABASE)
        durable(server)
    return server.url(LOCK_DATABASE)


def durable(server: PostgresServer | MariaDBServer) -> None:
    """MariaDB writes each commit to the operating system (a global setting: again after
    every start). PostgreSQL's is the database's own, kept."""
    if isinstance(server, MariaDBServer):
        server.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2")  # write, not fsync


def start_again(server: PostgresServer | MariaDBServer) -> None:
    """Start a killed server, as durable as it was."""
    server.start()
    durable(server)


class SqlBackend:
    """PostgreSQL (``db_type`` postgres) or MariaDB (mysql), on the session's server."""

    short_ttl = 0.2
    expiry_slack = 0.1

    def __init__(self, db_type: DbType, server: PostgresServer | MariaDBServer) -> None:
        self.name: str = db_type
        self.db_type = db_type
        self.server = server
        self.port = server.port
        self.url = server.url(LOCK_DATABASE)
        self.made: list[SqlLock] = []
        self._now = PG_NOW if db_type == "postgres" else MY_NOW
        self._admin: AsyncEngine | None = None

    def engine(self, port: int | None = None, *, pool: int = 10) -> AsyncEngine:
        url = self.server.url(LOCK_DATABASE, port=port)
        engine = create_engine_for(self.db_type, url, pool_size=pool, max_overflow=0,
                                   connect_timeout=2.0)  # fmt: skip
        assert isinstance(engine, AsyncEngine)
        return engine

    def locker(self, port: int | None = None, *, slow: bool = False, pool: int = 50) -> SqlLock:
        pool = min(pool, 40)  # the servers take 200 (PostgreSQL) and 300 connections
        # A burst of tasks beyond the pool waits for a connection, as the Redis client's
        # blocking pool lets it (5 s), each statement within the lock's own timeout.
        lock = SqlLock(self.engine(port, pool=pool), request_timeout=5.0 if slow else 1.0,
                       pool_size=pool, pool_timeout=5.0)  # fmt: skip
        self.made.append(lock)
        return lock

    def holder_args(self) -> list[str]:
        return [self.db_type, self.url]

    async def execute(self, sql: str, **params: Any) -> list[Any]:
        if self._admin is None:
            self._admin = self.engine(pool=1)
        async with self._admin.begin() as conn:
            result = await conn.execute(text(sql), params)
            return list(result) if result.returns_rows else []

    async def token_of(self, key: str) -> str | None:
        rows = await self.execute(
            f"SELECT token FROM lock_leases WHERE name = :name AND expires_us > {self._now}",
            name=SQL_PREFIX + key,
        )
        return rows[0][0] if rows else None

    async def overwrite(self, key: str, value: str) -> None:
        await self.execute(
            f"UPDATE lock_leases SET token = :token, fence = fence + 1, "
            f"expires_us = {self._now} + 5000000 WHERE name = :name",
            token=value,
            name=SQL_PREFIX + key,
        )

    async def crash(self) -> None:
        self.server.kill()  # the databases keep their data on disk
        start_again(self.server)

    async def clear(self) -> None:
        await self.execute("DELETE FROM lock_leases")

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.dispose()
