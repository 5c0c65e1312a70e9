"""The in-process lock: real mutual exclusion between the tasks of one process only.

Used by ``FailoverLock`` in ``fallback_mode: single_instance`` while Redis is down, and in
tests. Leases expire after their TTL exactly as Redis keys do. Fences follow the same
rule as the Redis lock's, ``max(previous + 1, wall clock in microseconds)``, so fences
handed out while falling back stay above those Redis handed out before (and Redis's stay
above these afterwards), clocks permitting.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from quantmesh.lock.base import Lease, wait_lock
from quantmesh.lock.renewal import RenewedLease, renewed

# Tokens of local leases start with this, so a wrapper can tell whose lease it holds.
LOCAL_TOKEN_PREFIX = "local-"
_PRUNE_AT = 10_000  # held keys before expired entries are swept


class LocalLock:
    """Leases on a dict of ``key -> (token, expiry)``; no I/O, never waits in ``try_lock``."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall_clock
        self._held: dict[str, tuple[str, float]] = {}
        self._fence = 0

    def _next_fence(self) -> int:
        self._fence = max(self._fence + 1, int(self._wall() * 1_000_000))
        return self._fence

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        now = self._clock()
        held = self._held.get(key)
        if held is not None and held[1] > now:
            return None
        if len(self._held) >= _PRUNE_AT:
            self._held = {k: v for k, v in self._held.items() if v[1] > now}
        token = LOCAL_TOKEN_PREFIX + secrets.token_hex(16)
        self._held[key] = (token, now + ttl)
        return Lease(key, token, self._next_fence(), now + ttl)

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        return await wait_lock(self.try_lock, key, ttl, timeout, clock=self._clock)

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        """``async with locker.renewed(key, ttl)``: a lease renewed by a watchdog, always released."""
        return renewed(self, key, ttl, timeout, clock=self._clock)

    async def unlock(self, lease: Lease) -> bool:
        held = self._held.get(lease.key)
        if held is None or held[0] != lease.token:
            return False
        del self._held[lease.key]
        return held[1] > self._clock()

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        now = self._clock()
        held = self._held.get(lease.key)
        if held is None or held[0] != lease.token or held[1] <= now:
            return None
        self._held[lease.key] = (lease.token, now + ttl)
        return lease._replace(deadline=now + ttl)

    async def close(self) -> None:
        self._held.clear()
