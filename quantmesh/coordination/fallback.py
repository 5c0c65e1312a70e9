"""Ownership leases of an instance whose lock falls back to a local one while the lock
server (Redis, etcd) is down.

This is ``distributed_lock.fallback_mode: single_instance``. While the server is healthy
these are the server's leases every instance of the fleet takes: the instance takes part in
ownership exactly as with ``halt``. The difference is only while the lock runs on its
local fallback (the server unreachable, seen by a failed health check):

- no lease is granted: nothing is claimed while the server is down (the local lock knows
  nothing of the other instances);
- a lease this instance already holds is renewed locally instead of lost - if ``keep``
  allows it for that key (the coordinator allows it only for symbols no other live member
  listed when the server was last reachable) - so the symbol keeps trading on the local lock;
- once the lock is back on the server, a lease renewed locally is renewed there again if
  the server still holds it for this instance (nobody can have owned the symbol meanwhile);
- if it lapsed there, it is lost: another instance may have owned and traded the symbol
  in between, so the symbol is claimed again the normal way, its grid read afresh.

It wraps the instance's ``FailoverLock``: renewals that fail wake its health check, and a
lease it hands out from its local lock is never used as an ownership lease.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import structlog

from quantmesh.errors import LockUnavailable
from quantmesh.lock.base import DistributedLock, Lease
from quantmesh.lock.local import LOCAL_TOKEN_PREFIX
from quantmesh.lock.renewal import RenewedLease, renewed

log = structlog.get_logger(__name__)


class FallbackLeases:
    """A ``DistributedLock`` for ownership leases: the server's leases, kept locally while the
    lock has fallen back to its local lock (see the module docstring)."""

    def __init__(
        self,
        locker: DistributedLock,
        *,
        active: Callable[[], bool],
        check: Callable[[], Awaitable[object]],
        keep: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._locker = locker
        self._active = active  # the lock runs on its local fallback now
        self._check = check  # one health check of the lock backend, now
        self._keep = keep  # whether a lease of this key may be kept locally
        self._clock = clock
        self._kept: dict[str, str] = {}  # token -> key of the leases renewed locally

    def kept_keys(self) -> set[str]:
        """The keys whose lease is renewed locally now (the server unreachable)."""
        return set(self._kept.values())

    # taking ------------------------------------------------------------------------------

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        self._refuse_while_local(key)
        lease = await self._locker.try_lock(key, ttl)  # no await between check and call
        return await self._on_server(lease)

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:  # noqa: ASYNC109 - lock API
        self._refuse_while_local(key)
        lease = await self._locker.lock(key, ttl, timeout)
        taken = await self._on_server(lease)
        if taken is None:
            raise LockUnavailable(f"{key}: the lock server went down while it was taken")
        return taken

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        """``async with locker.renewed(key, ttl)``: a lease renewed by a watchdog, always released."""
        return renewed(self, key, ttl, timeout, clock=self._clock)

    def _refuse_while_local(self, key: str) -> None:
        if self._active():
            raise LockUnavailable(
                f"{key}: the lock server is down (fallback_mode single_instance): no symbol "
                "is claimed until it is back"
            )

    async def _on_server(self, lease: Lease | None) -> Lease | None:
        """A lease from the local lock is no ownership lease: give it back at once."""
        if lease is None or not lease.token.startswith(LOCAL_TOKEN_PREFIX):
            return lease
        await self._locker.unlock(lease)
        return None

    # keeping -----------------------------------------------------------------------------

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        if lease.token in self._kept:
            return await self._extend_kept(lease, ttl)
        try:
            return await self._locker.extend(lease, ttl)
        except LockUnavailable:
            if not self._active():
                await self._check()  # is it the server that is down, or this one call?
            if self._active() and self._keep(lease.key):
                self._kept[lease.token] = lease.key
                log.warning(
                    "ownership_kept_locally",
                    key=lease.key,
                    fence=lease.fence,
                    detail="the lock server is down (fallback_mode single_instance): this "
                    "instance keeps trading the symbol on its local lock, and claims nothing new",
                )
                return self._local_renewal(lease, ttl)
            raise

    async def _extend_kept(self, lease: Lease, ttl: float) -> Lease | None:
        if self._active():
            if not self._keep(lease.key):
                self._kept.pop(lease.token, None)
                return None  # lost: another instance may take it over
            return self._local_renewal(lease, ttl)
        # The lock is back on the server (an outage here raises, and is retried until the
        # local deadline): the lease goes on only if the server still holds it for us.
        renewed = await self._locker.extend(lease, ttl)
        self._kept.pop(lease.token, None)
        if renewed is None:
            log.warning(
                "ownership_lapsed_while_kept_locally",
                key=lease.key,
                fence=lease.fence,
                detail="the lock server no longer holds this lease: the symbol stops and is "
                "claimed again, its grid read afresh (another instance may have traded it)",
            )
        else:
            log.warning("ownership_back_in_redis", key=lease.key, fence=renewed.fence)
        return renewed

    def _local_renewal(self, lease: Lease, ttl: float) -> Lease:
        return lease._replace(deadline=self._clock() + ttl)

    # giving back -------------------------------------------------------------------------

    async def unlock(self, lease: Lease) -> bool:
        if self._kept.pop(lease.token, None) is not None and self._active():
            return True  # nothing to free on the server now: the key lapses there by itself
        return await self._locker.unlock(lease)

    async def close(self) -> None:
        """Nothing of its own: the wrapped lock is closed by its owner."""
        self._kept.clear()
