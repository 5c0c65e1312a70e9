"""The ``DistributedLock`` protocol (the seed's Lock / TryLock / Unlock / Extend)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from quantmesh.errors import LockError


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of holding ``key``.

    ``token`` identifies the holder (only it can release or extend); ``fence`` grows with
    every acquisition of the key; ``deadline`` is a ``time.monotonic()`` value after which
    the holder must assume the lock is gone.
    """

    key: str
    token: str
    fence: int
    deadline: float


class DistributedLock(Protocol):
    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        """Take ``key`` for ``ttl`` seconds if free; never waits. ``None`` when held."""
        ...

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        """Take ``key``, waiting up to ``timeout`` seconds; raises ``LockError``."""
        ...

    async def unlock(self, lease: Lease) -> bool:
        """Release; ``False`` when the lease had already expired or been taken over."""
        ...

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        """Renew for ``ttl`` seconds from now; ``None`` when the lease was lost."""
        ...

    async def close(self) -> None: ...


@asynccontextmanager
async def hold(
    locker: DistributedLock, key: str, ttl: float, timeout: float
) -> AsyncIterator[Lease]:
    """``async with hold(locker, key, ttl, timeout) as lease``: waits, then always releases."""
    lease = await locker.lock(key, ttl, timeout)
    try:
        yield lease
    finally:
        await locker.unlock(lease)


__all__ = ["DistributedLock", "Lease", "LockError", "hold"]
