"""Who sends a fleet event: one instance, elected per event key through Redis.

Every instance that sees a fleet event (the lock backend went down, the database came
back) asks ``elect(key)``. ``RedisElection`` answers with ``SET <prefix>notify:<key>
<instance> NX PX <window>``: the first instance to ask within ``window`` seconds wins
and sends; the others count the event ``deduplicated``. The lease expires by itself, so
the same event later (a second outage) is sent again.

When Redis does not answer (the very outage being reported, often), the fallback
decides without it: the instance with the smallest id among the live members last seen
sends. Alone (no Redis configured) there is no election: the dispatcher sends everything.
"""

from __future__ import annotations

import asyncio
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
            sending = self._fallback()
            log.warning(
                "notification_election_unavailable",
                key=key,
                sending=sending,
                error=f"{type(exc).__name__}: {exc}",
            )
            return sending
        return won is not None and won is not False


def smallest_id(instance: str, members: Callable[[], list[str]]) -> Callable[[], bool]:
    """The fallback: whether ``instance`` has the smallest id among ``members()``."""

    def chosen() -> bool:
        ids = members()
        return not ids or min([*ids, instance]) == instance

    return chosen
