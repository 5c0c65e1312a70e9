"""The coordination tests' servers: Redis, etcd, PostgreSQL and MariaDB, one of each per
session (emptied per test; the databases hold the lock's table, in ``support.
LOCK_DATABASE``); ``fleet_server`` runs a test once per lock server (Redis and etcd
unless a test names more: ``EVERY_SERVER``); and the instances a test starts, closed even
when it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.coordination.support import Instances
from tests.lock.backends import LOCK_DATABASE
from tests.lock.conftest import etcd_server, lock_mariadb, lock_postgres, redis, redis_server
from tests.servers.etcd import request

__all__ = ["etcd_server", "lock_mariadb", "lock_postgres", "redis", "redis_server"]

# The lock servers a test runs on when it asks for them all: the core of ownership (a
# hand-over, a take-over, fencing, the server down) on every ``distributed_lock.type``.
EVERY_SERVER = pytest.mark.parametrize(
    "fleet_server", ["redis", "etcd", "postgres", "mysql"], indirect=True
)


@pytest.fixture
async def instances(tmp_path: Path) -> AsyncIterator[Instances]:
    started = Instances(tmp_path)
    yield started
    await started.close()


@dataclass(frozen=True)
class FleetServer:
    """The lock server a test's instances share: its kind (``distributed_lock.type``) and
    port."""

    kind: str
    port: int


@pytest.fixture(params=["redis", "etcd"])
def fleet_server(request: pytest.FixtureRequest, instances: Instances) -> FleetServer:
    """Each lock server on its session's process, emptied; ``instances`` start on it."""
    kind: str = request.param
    if kind == "redis":
        redis = request.getfixturevalue("redis_server")
        redis.command("FLUSHALL")
        port = redis.port
    elif kind == "etcd":
        server = request.getfixturevalue("etcd_server")
        clear_etcd(server.url)
        port = server.port
    else:  # the database lock: every lease, member and record is a row of lock_leases
        database = request.getfixturevalue(
            "lock_postgres" if kind == "postgres" else "lock_mariadb"
        )
        database.query("DELETE FROM lock_leases", LOCK_DATABASE)
        port = database.port
    instances.server = kind
    return FleetServer(kind, port)


def clear_etcd(url: str) -> None:
    """Every key gone (leases expire by themselves)."""
    request(url, "/v3/kv/deleterange", {"key": "AA==", "range_end": "AA=="})
