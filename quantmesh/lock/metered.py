"""``MeteredLock``: any ``DistributedLock`` with the seed's lock metrics recorded.

Every acquisition counts in ``quantmesh_lock_acquire_total{key,status,purpose}`` with
``status`` one of:

- ``success``: granted;
- ``conflict``: held by another holder (``try_lock`` returned ``None``, or ``lock`` timed
  out waiting), also counted in ``quantmesh_lock_conflict_total{key,purpose}``;
- ``unavailable``: the backend could not be reached or is halted (``LockUnavailable``);
- ``error``: any other failure of the backend.

``quantmesh_lock_hold_duration_seconds{key,purpose}`` observes, per lease (its key,
token and fence), the time from the grant to its release - or to the moment an extension
was refused, when the lease was lost instead. A lease its holder drops without either
(its deadline simply passed) is forgotten unobserved.

``purpose`` tells the locks apart: ``order`` (placing and cancelling, one lock per
level), ``reconcile`` (one reconciler per symbol), ``ownership`` (the symbol's ownership
lease). ``key`` is the per-symbol label, ``order:binance:ETHUSDT`` for every lock of the
symbol (``key_label``), never a level or a price. Errors propagate unchanged: the wrapper
only counts.

Wrap one backend in one ``MeteredLock`` per purpose; the backend stays shared and is
closed by its owner (``close`` here only forgets this wrapper's leases).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal

from quantmesh.errors import LockTimeout, LockUnavailable
from quantmesh.lock.base import DistributedLock, Lease
from quantmesh.lock.renewal import RenewedLease, renewed
from quantmesh.observability.metrics import Metrics

Purpose = Literal["order", "reconcile", "ownership"]
PURPOSES: tuple[Purpose, ...] = ("order", "reconcile", "ownership")

_PRUNE_AT = 10_000  # leases tracked before those past their deadline are swept

_LeaseId = tuple[str, str, int]  # key, token, fence: unique per acquisition


def key_label(key: str) -> str:
    """The metric label of a lock key: its hash tag without the braces, which is the
    symbol's part (``{order:binance:ETHUSDT}:17`` -> ``order:binance:ETHUSDT``, the same
    for the symbol's ``:owner`` and ``:reconcile`` keys); a key without one as it is."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def _lease_id(lease: Lease) -> _LeaseId:
    return (lease.key, lease.token, lease.fence)


class MeteredLock:
    """Records the lock metrics of ``inner``'s acquisitions under ``purpose``."""

    def __init__(
        self,
        inner: DistributedLock,
        *,
        metrics: Metrics,
        purpose: Purpose,
        label: Callable[[str], str] = key_label,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``label`` maps a lock key to its bounded ``key`` label; ``clock`` must be the
        clock of the leases' deadlines (``time.monotonic`` for every backend)."""
        if purpose not in PURPOSES:
            raise ValueError(f"lock purpose must be one of {', '.join(PURPOSES)}: {purpose!r}")
        self.inner = inner
        self.purpose: Purpose = purpose
        self._label = label
        self._clock = clock
        self._acquire = metrics.lock_acquire
        self._conflict = metrics.lock_conflict
        self._hold = metrics.lock_hold
        # lease -> (granted at, its deadline), until released or lost
        self._granted: dict[_LeaseId, tuple[float, float]] = {}

    # recording ---------------------------------------------------------------------------

    def _attempted(self, key: str, status: str) -> None:
        label = self._label(key)
        self._acquire.labels(label, status, self.purpose).inc()
        if status == "conflict":
            self._conflict.labels(label, self.purpose).inc()

    def _failed(self, key: str, exc: BaseException) -> None:
        if isinstance(exc, LockTimeout):
            self._attempted(key, "conflict")
        elif isinstance(exc, LockUnavailable):
            self._attempted(key, "unavailable")
        else:
            self._attempted(key, "error")

    def _granted_now(self, lease: Lease) -> Lease:
        now = self._clock()
        if len(self._granted) >= _PRUNE_AT:
            self._granted = {i: g for i, g in self._granted.items() if g[1] > now}
        self._granted[_lease_id(lease)] = (now, lease.deadline)
        self._attempted(lease.key, "success")
        return lease

    def _ended(self, lease: Lease) -> None:
        granted = self._granted.pop(_lease_id(lease), None)
        if granted is not None:
            held = max(self._clock() - granted[0], 0.0)
            self._hold.labels(self._label(lease.key), self.purpose).observe(held)

    @property
    def held(self) -> int:
        """Leases granted through this wrapper and not yet released or lost."""
        return len(self._granted)

    # the lock ----------------------------------------------------------------------------

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        try:
            lease = await self.inner.try_lock(key, ttl)
        except Exception as exc:  # counted, then raised unchanged
            self._failed(key, exc)
            raise
        if lease is None:
            self._attempted(key, "conflict")
            return None
        return self._granted_now(lease)

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        try:
            lease = await self.inner.lock(key, ttl, timeout)
        except Exception as exc:  # counted, then raised unchanged
            self._failed(key, exc)
            raise
        return self._granted_now(lease)

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        """``async with locker.renewed(key, ttl)``: a lease renewed by a watchdog, always released."""
        return renewed(self, key, ttl, timeout, clock=self._clock)

    async def unlock(self, lease: Lease) -> bool:
        self._ended(lease)  # the holder lets go now, whatever the backend answers
        return await self.inner.unlock(lease)

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        renewed = await self.inner.extend(lease, ttl)
        if renewed is None:
            self._ended(lease)  # lost: held until now at most
            return None
        lease_id = _lease_id(lease)
        granted = self._granted.pop(lease_id, None)
        if granted is not None:
            self._granted[_lease_id(renewed)] = (granted[0], renewed.deadline)
        return renewed

    async def close(self) -> None:
        """Forget this wrapper's leases; the wrapped lock is closed by its owner."""
        self._granted.clear()
