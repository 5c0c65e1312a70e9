"""The ``DistributedLock`` protocol (the seed's Lock / TryLock / Unlock / Extend).

A lock hands out ``Lease`` values; the lease, not the locker, carries the holder's token,
so two tasks on one thread never share a token by accident. ``wait_lock`` is the one
waiting loop every backend's ``lock()`` uses.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

from quantmesh.errors import LockError, LockTimeout
from quantmesh.lock.health import LockHealth

# Backoff of ``lock()`` between tries: full jitter, doubling from the first to the cap.
_FIRST_BACKOFF = 0.005
_BACKOFF_CAP = 0.25


class Lease(NamedTuple):
    """Proof of holding ``key``.

    ``token`` identifies the holder (only it can release or extend); ``fence`` grows with
    every acquisition of the key; ``deadline`` is a ``time.monotonic()`` value after which
    the holder must assume the lock is gone. A tuple, not a frozen dataclass: one is made
    for every order, and a frozen dataclass's ``__init__`` costs three times as much.
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


class ServiceLock(DistributedLock, Protocol):
    """The lock a service runs: started with it, and reporting its health."""

    async def start(self) -> None:
        """Begin what the backend needs while the service runs (its health checks)."""
        ...

    def health(self) -> LockHealth: ...


async def wait_lock(
    try_lock: Callable[[str, float], Awaitable[Lease | None]],
    key: str,
    ttl: float,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Lease:
    """Try until granted or ``timeout`` passed (``LockTimeout``), with jittered backoff.

    Full jitter keeps instances that lost the same race from retrying in lockstep.
    Errors of the backend propagate at once: waiting does not hide an outage.
    """
    deadline = clock() + timeout
    backoff = _FIRST_BACKOFF
    while True:
        lease = await try_lock(key, ttl)
        if lease is not None:
            return lease
        left = deadline - clock()
        if left <= 0:
            raise LockTimeout(key, timeout)
        await sleep(min(left, random.uniform(0, backoff)))  # jitter, not crypto
        backoff = min(backoff * 2, _BACKOFF_CAP)


__all__ = ["DistributedLock", "Lease", "LockError", "ServiceLock", "wait_lock"]
