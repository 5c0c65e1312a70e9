"""The lock server a fleet shares, one factory per ``distributed_lock.type``.

A ``LockServer`` is what an instance keeps on that server, over one client: the lock
(level locks and ownership leases, health-checked by ``FailoverLock``), the fleet store
(membership heartbeats and ownership records) and the election of who sends a fleet
event. Closing the lock closes the client.

- ``redis``: ``RedisLock``, ``Fleet`` and ``RedisElection`` over one redis-py client
  (``redis:`` settings);
- ``etcd``: ``EtcdLock``, ``EtcdFleet`` and ``EtcdElection`` over one ``EtcdGateway``
  (``etcd:`` settings); redis-py is never imported.

Adding a backend (``postgres``, ``mysql``: a lease table in the shared database) is one
function ``Settings -> LockServer`` and its entry in ``LOCK_SERVERS``. Each factory
imports its client when called, so a lone instance loads none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from quantmesh.config import Settings
from quantmesh.coordination.allocation import Member
from quantmesh.coordination.membership import FleetStore
from quantmesh.lock.failover import CheckedLock
from quantmesh.notify.election import Election


@dataclass(frozen=True, slots=True)
class LockServer:
    """One lock server's lock, fleet store and election. ``fleet(me, exchange, ttl)`` and
    ``election(instance, window, fallback)`` build on the lock's client."""

    name: str  # distributed_lock.type, as /api/status and the lock metrics name it
    lock: CheckedLock
    fleet: Callable[[Member, str, float], FleetStore]
    election: Callable[[str, float, Callable[[], bool]], Election]

    async def close(self) -> None:
        """Close the client (the lock owns it)."""
        await self.lock.close()


def redis_server(settings: Settings) -> LockServer:
    """Redis (standalone, Sentinel or Cluster), as ``redis:`` says."""
    from quantmesh.coordination.fleet import Fleet
    from quantmesh.lock.connection import redis_client
    from quantmesh.lock.redis import RedisLock
    from quantmesh.notify.election import RedisElection

    prefix = settings.distributed_lock.key_prefix
    client = redis_client(settings.redis)

    def fleet(me: Member, exchange: str, ttl: float) -> FleetStore:
        return Fleet(client, prefix=prefix, exchange=exchange, me=me, ttl=ttl)

    def election(instance: str, window: float, fallback: Callable[[], bool]) -> Election:
        return RedisElection(
            client, prefix=prefix, instance=instance, window=window, fallback=fallback
        )

    return LockServer("redis", RedisLock(client, prefix=prefix), fleet, election)


def etcd_server(settings: Settings) -> LockServer:
    """An etcd cluster, through its members' JSON gateway, as ``etcd:`` says."""
    from quantmesh.coordination.fleet_etcd import EtcdFleet
    from quantmesh.lock.etcd import EtcdGateway, EtcdLock
    from quantmesh.notify.election import EtcdElection

    etcd = settings.etcd
    prefix = settings.distributed_lock.key_prefix
    client = EtcdGateway(
        etcd.endpoints,
        request_timeout=etcd.request_timeout,
        connect_timeout=etcd.connect_timeout,
        username=etcd.username,
        password=etcd.password.get_secret_value(),
    )

    def fleet(me: Member, exchange: str, ttl: float) -> FleetStore:
        return EtcdFleet(client, prefix=prefix, exchange=exchange, me=me, ttl=ttl)

    def election(instance: str, window: float, fallback: Callable[[], bool]) -> Election:
        return EtcdElection(
            client, prefix=prefix, instance=instance, window=window, fallback=fallback
        )

    return LockServer("etcd", EtcdLock(client, prefix=prefix), fleet, election)


LOCK_SERVERS: Final[Mapping[str, Callable[[Settings], LockServer]]] = {
    "redis": redis_server,
    "etcd": etcd_server,
}


def lock_server(settings: Settings) -> LockServer:
    """The server ``distributed_lock.type`` names. Nothing connects yet: the first call
    or health check does."""
    return LOCK_SERVERS[settings.distributed_lock.type](settings)
