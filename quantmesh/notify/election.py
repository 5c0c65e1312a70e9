"""Who sends a fleet event: one instance, elected per event key on the lock server.

Every instance that sees a fleet event (the lock backend went down, the database came
back) asks ``elect(key)``. The first instance to ask within ``window`` seconds wins and
sends; the others count the event ``deduplicated``. The claim expires by itself, so the
same event later (a second outage) is sent again.

- ``RedisElection``: ``SET <prefix>notify:<key> <instance> NX PX <window>``;
- ``EtcdElection``: a lease of ``window`` seconds (rounded up: etcd counts whole
  seconds), and one transaction that puts ``<prefix>notify:<key>`` under it only if the
  key is absent. A loser's lease holds no key and expires by itself;
- ``SqlElection`` (``quantmesh.lock.sql``, for ``distributed_lock.type`` postgres and
  mysql): a lease row ``<prefix>notify:<key>`` of ``window`` seconds in the database
  lock's ``lock_leases`` table, taken by the lock's compare-and-set and never released.

When the server does not answer (the very outage being reported, often), the fallback
decides without it: the instance with the smallest id among the live members last seen
(the fleet store's membership) sends. Alone (no lock server configured) there is no
election: the dispatcher sends everything.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Callable
from typing import Any, Final, Protocol

import structlog

log = structlog.get_logger(__name__)

ELECTION_TIMEOUT: Final = 2.0


class Election(Protocol):
    """Decides whether this instance sends the fleet event ``key``."""

    async def elect(self, key: str) -> bool: ...


class ElectionClient(Protocol):
    """The part of ``redis.asyncio.Redis`` the election uses."""

    async def execute_command(self, *args: Any, **options: Any) -> Any: ...


def unanswered(key: str, fallback: Callable[[], bool], exc: Exception) -> bool:
    """Whether to send ``key`` when the lock server did not answer (``exc``): ``fallback()``
    decides, and the decision is logged."""
    sending = fallback()
    log.warning(
        "notification_election_unavailable",
        key=key,
        sending=sending,
        error=f"{type(exc).__name__}: {exc}",
    )
    return sending


class RedisElection:
    """One sender per key and ``window`` seconds, through ``SET NX PX``; see the module
    docstring. ``fallback()`` says whether to send when Redis does not answer."""

    def __init__(
        self,
        client: ElectionClient,
        *,
        prefix: str,
        instance: str,
        window: float,
        fallback: Callable[[], bool],
        timeout: float = ELECTION_TIMEOUT,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._instance = instance
        self._window_ms = max(int(window * 1000), 1)
        self._fallback = fallback
        self._timeout = timeout

    def key(self, key: str) -> str:
        return f"{self._prefix}notify:{key}"

    async def elect(self, key: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                won = await self._client.execute_command(
                    "SET", self.key(key), self._instance, "NX", "PX", self._window_ms
                )
        except Exception as exc:  # noqa: BLE001 - Redis down, timed out: decide without it
            return unanswered(key, self._fallback, exc)
        return won is not None and won is not False


class GatewayClient(Protocol):
    """The part of the etcd lock's gateway client (``EtcdGateway``) the election uses."""

    async def call(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]: ...


class EtcdElection:
    """One sender per key and ``window`` seconds, through a lease and a create-if-absent
    transaction on etcd; see the module docstring. ``fallback()`` says whether to send
    when etcd does not answer."""

    def __init__(
        self,
        client: GatewayClient,
        *,
        prefix: str,
        instance: str,
        window: float,
        fallback: Callable[[], bool],
        timeout: float = ELECTION_TIMEOUT,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._value = base64.b64encode(instance.encode()).decode()
        self._seconds = max(1, math.ceil(window))
        self._fallback = fallback
        self._timeout = timeout

    def key(self, key: str) -> str:
        return f"{self._prefix}notify:{key}"

    async def elect(self, key: str) -> bool:
        name = base64.b64encode(self.key(key).encode()).decode()
        try:
            async with asyncio.timeout(self._timeout):
                what = "notification election"
                grant = await self._client.call("/v3/lease/grant", {"TTL": self._seconds}, what)
                absent = {
                    "key": name,
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": "0",
                }
                put = {"key": name, "value": self._value, "lease": str(grant["ID"])}
                reply = await self._client.call(
                    "/v3/kv/txn", {"compare": [absent], "success": [{"request_put": put}]}, what
                )
        except Exception as exc:  # noqa: BLE001 - etcd down, timed out: decide without it
            return unanswered(key, self._fallback, exc)
        return bool(reply.get("succeeded"))


def smallest_id(instance: str, members: Callable[[], list[str]]) -> Callable[[], bool]:
    """The fallback: whether ``instance`` has the smallest id among ``members()``."""

    def chosen() -> bool:
        ids = members()
        return not ids or min([*ids, instance]) == instance

    return chosen
