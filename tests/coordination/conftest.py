"""The coordination tests' servers: Redis and etcd, one of each per session (emptied per
test); ``fleet_server`` runs a test once per lock server; and the instances a test
starts, closed even when it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.coordination.support import Instances
from tests.lock.conftest import etcd_server, redis, redis_server
from tests.servers.etcd import request

__all__ = ["etcd_server", "redis", "redis_server"]


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
    else:
        server = request.getfixturevalue("etcd_server")
        clear_etcd(server.url)
        port = server.port
    instances.server = kind
    return FleetServer(kind, port)


def clear_etcd(url: str) -> None:
    """Every key gone (leases expire by themselves)."""
    request(url, "/v3/kv/deleterange", {"key": "AA==", "range_end": "AA=="})
