"""The single-instance lock: always granted, no I/O, next to no overhead."""

from __future__ import annotations

import math

from quantmesh.lock.base import Lease
from quantmesh.lock.health import NO_SERVER, LockHealth

_TOKEN = "nop"


class NopLock:
    """Grants every request at once. Only correct when a single instance trades."""

    __slots__ = ("_fence",)

    def __init__(self) -> None:
        self._fence = 0

    async def start(self) -> None:
        return None

    def health(self) -> LockHealth:
        return NO_SERVER

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        self._fence += 1
        return Lease(key, _TOKEN, self._fence, math.inf)

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        self._fence += 1
        return Lease(key, _TOKEN, self._fence, math.inf)

    async def unlock(self, lease: Lease) -> bool:
        return True

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        return lease

    async def close(self) -> None:
        return None
