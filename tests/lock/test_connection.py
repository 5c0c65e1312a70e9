"""The Redis client from settings: URLs, ACL users, addr keys, Sentinel and Cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import SSLConnection
from redis.asyncio.cluster import RedisCluster

from quantmesh.config import parse_settings
from quantmesh.config.lock_servers import RedisSettings
from quantmesh.errors import ConfigError, LockUnavailable
from quantmesh.lock.connection import redis_client
from quantmesh.lock.failover import FailoverLock
from quantmesh.lock.redis import RedisLock
from quantmesh.wiring import build_lock, secret_values
from tests.servers.redis import ClusterSetup, RedisServer, SentinelSetup

PASSWORD = "pw-7f3a"
SYMBOLS = "trading:\n  symbols:\n    - {symbol: ETHUSDT, price_interval: 1}\n"


@pytest.fixture(scope="module")
def secured() -> Iterator[RedisServer]:
    """requirepass for the default user, plus an ACL user ``trader``."""
    with RedisServer(password=PASSWORD, user=("trader", "trader-pw")) as server:
        yield server


async def round_trip(locker: RedisLock, key: str = "{order:x:ETHUSDT}:1") -> int:
    lease = await locker.try_lock(key, 5.0)
    assert lease is not None
    assert await locker.unlock(lease)
    return lease.fence


@pytest.mark.parametrize(
    "settings",
    [
        {"url": f"redis://:{PASSWORD}@127.0.0.1:{{port}}/2"},
        {"url": "redis://trader:trader-pw@127.0.0.1:{port}"},
        {"url": "redis://127.0.0.1:{port}/1", "username": "trader", "password": "trader-pw"},
        {"addr": "127.0.0.1:{port}", "password": PASSWORD, "db": 3, "pool_size": 2},
        {"addr": "127.0.0.1:{port}", "username": "trader", "password": "trader-pw"},
    ],
    ids=["url-password-db", "url-acl-user", "url-plus-keys", "seed-addr-keys", "addr-acl-user"],
)
async def test_every_way_of_naming_a_server_connects(
    secured: RedisServer, settings: dict[str, object]
) -> None:
    values = {k: v.format(port=secured.port) if isinstance(v, str) else v
              for k, v in settings.items()}  # fmt: skip
    locker = RedisLock(redis_client(RedisSettings.model_validate(values)))
    try:
        assert await round_trip(locker) > 0
    finally:
        await locker.close()


async def test_a_wrong_password_is_unavailable_and_not_echoed(secured: RedisServer) -> None:
    settings = RedisSettings(addr=f"127.0.0.1:{secured.port}", password="wrong-pw-123")
    locker = RedisLock(redis_client(settings))
    try:
        with pytest.raises(Exception) as caught:
            await locker.try_lock("{order:x:ETHUSDT}:1", 1.0)
        assert "wrong-pw-123" not in str(caught.value)
    finally:
        await locker.close()


def test_rediss_and_tls_select_tls_connections() -> None:
    tls_url = redis_client(RedisSettings.model_validate({"url": "rediss://:p@example:6380/0"}))
    tls_addr = redis_client(RedisSettings(addr="example:6380", tls=True))
    for client in (tls_url, tls_addr):
        assert client.connection_pool.connection_class is SSLConnection  # type: ignore[attr-defined]


def test_every_connection_has_socket_timeouts() -> None:
    client = redis_client(RedisSettings(socket_timeout=0.3, connect_timeout=0.4))
    kwargs = client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert kwargs["socket_timeout"] == 0.3 and kwargs["socket_connect_timeout"] == 0.4


@pytest.mark.parametrize(
    ("yaml", "problem"),
    [
        ("redis:\n  mode: sentinel\n", "redis.addrs: required for mode sentinel"),
        ("redis:\n  mode: cluster\n  db: 2\n", "redis.db: must be 0 for mode cluster"),
        ("redis:\n  mode: cluster\n  url: redis://h:1\n", "redis.url: only for mode standalone"),
        ("redis:\n  addrs: [nohost]\n", "redis.addrs: must be host:port"),
        ("distributed_lock:\n  key_prefix: 'a b'\n", "distributed_lock.key_prefix: must be"),
    ],
)
def test_bad_redis_settings_are_one_line_each(yaml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(SYMBOLS + yaml, env={})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(problem), caught.value.problems


async def test_the_daemon_wiring_builds_a_failover_lock_that_works(secured: RedisServer) -> None:
    settings = parse_settings(
        SYMBOLS
        + "distributed_lock: {enabled: true, health_check_interval: 0.1}\n"
        + f"redis: {{addr: '127.0.0.1:{secured.port}', password: {PASSWORD}}}\n",
        env={},
    )
    assert PASSWORD in secret_values(settings)
    locker = build_lock(settings)
    assert isinstance(locker, FailoverLock) and locker.fallback_mode == "halt"
    try:
        lease = await locker.try_lock("{order:x:ETHUSDT}:1", 1.0)
        assert lease is not None and await locker.unlock(lease)
    finally:
        await locker.close()


async def test_sentinel_failover_moves_the_lock_to_the_new_master() -> None:
    with SentinelSetup() as setup:
        settings = RedisSettings(
            mode="sentinel", addrs=(setup.sentinel_addr,), master_name=setup.MASTER_NAME,
            socket_timeout=0.5, connect_timeout=0.5,
        )  # fmt: skip
        locker = RedisLock(redis_client(settings))
        try:
            before = await round_trip(locker)
            setup.failover()
            deadline = time.monotonic() + 10
            while True:  # calls fail (closed: no lease) until the client finds the new master
                try:
                    after = await round_trip(locker)
                    break
                except LockUnavailable:
                    assert time.monotonic() < deadline, "no lease from the new master"
                    await asyncio.sleep(0.1)
            assert after > before
        finally:
            await locker.close()


async def test_a_three_master_cluster_serves_every_symbol_with_its_fence_in_one_slot() -> None:
    with ClusterSetup() as cluster:
        client = redis_client(RedisSettings(mode="cluster", addrs=tuple(cluster.addrs)))
        assert isinstance(client, RedisCluster)
        locker = RedisLock(client)
        try:
            symbols = [f"order:x:C{i}USDT" for i in range(12)]  # spread over the masters
            nodes = set()
            for symbol in symbols:
                fences = [await round_trip(locker, f"{{{symbol}}}:{level}") for level in range(3)]
                assert fences == sorted(set(fences))
                key = f"quantmesh:lock:{{{symbol}}}:1"
                slot = client.keyslot(key)
                assert slot == client.keyslot(f"quantmesh:lock:{{{symbol}}}:fence")
                node = client.get_node_from_key(key)
                assert node is not None
                nodes.add(node.name)
            assert len(nodes) == 3
        finally:
            await locker.close()
