"""A redis-py asyncio client from ``redis:`` settings: one server, Sentinel or Cluster.

``pool_size`` bounds the connections to a single server (a call beyond it waits for a
free one); Sentinel and Cluster clients keep redis-py's own pools. Every connection gets a socket timeout (each reply) and a connect timeout, so no lock
call can hang longer than that; a command is retried at most once, at once, on a fresh
connection (a pooled connection may be stale after a Redis restart or failover). The
lock scripts are idempotent, so the retry is safe. Nothing here connects yet: the first
command does.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from quantmesh.config.lock_servers import RedisSettings
from quantmesh.lock.redis import RedisClient


class SentinelMaster:
    """The Sentinel-managed master's client; closing it closes the Sentinel clients too."""

    def __init__(self, master: RedisClient, sentinel: Sentinel) -> None:
        self.master = master
        self._sentinel = sentinel

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await self.master.execute_command(*args, **options)

    async def aclose(self) -> None:
        await self.master.aclose()
        for client in self._sentinel.sentinels:
            await client.aclose()


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _common(settings: RedisSettings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": Retry(NoBackoff(), 1),
    }


def _credentials(settings: RedisSettings) -> dict[str, Any]:
    password = settings.password.get_secret_value()
    out: dict[str, Any] = {}
    if password:
        out["password"] = password
    if settings.username:
        out["username"] = settings.username
    return out


def redis_client(settings: RedisSettings) -> RedisClient:
    """The client for ``settings.mode``; a ``url``'s own user, password and db win."""
    common = _common(settings)
    credentials = _credentials(settings)
    if settings.mode == "cluster":
        nodes = [ClusterNode(*_split(a)) for a in (settings.addrs or (settings.addr,))]
        return RedisCluster(
            startup_nodes=nodes,
            ssl=settings.tls,
            **credentials,
            **common,
        )
    if settings.mode == "sentinel":
        sentinel_auth: dict[str, Any] = {}
        if settings.sentinel_password.get_secret_value():
            sentinel_auth["password"] = settings.sentinel_password.get_secret_value()
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2 on
            [_split(a) for a in settings.addrs],
            sentinel_kwargs={
                "socket_timeout": settings.socket_timeout,
                "socket_connect_timeout": settings.connect_timeout,
                **sentinel_auth,
            },
        )
        master: RedisClient = sentinel.master_for(
            settings.master_name,
            db=settings.db,
            ssl=settings.tls,
            **credentials,
            **common,
        )
        return SentinelMaster(master, sentinel)
    # A blocking pool: beyond pool_size, a call waits (up to connect_timeout) for a free
    # connection instead of failing with "too many connections".
    pool_kwargs: dict[str, Any] = {
        "db": settings.db,
        "max_connections": settings.pool_size,
        "timeout": settings.connect_timeout,
        **credentials,
        **common,
    }
    pool: BlockingConnectionPool
    if settings.url is not None:
        pool = BlockingConnectionPool.from_url(settings.url.get_secret_value(), **pool_kwargs)
    else:
        host, port = _split(settings.addr)
        pool = BlockingConnectionPool(
            host=host,
            port=port,
            connection_class=SSLConnection if settings.tls else Connection,
            **pool_kwargs,
        )
    return Redis.from_pool(pool)
