"""``async with renewed(locker, key, ttl) as held``: a lease kept alive by a watchdog.

For work that may outlast one TTL (reconciliation): the watchdog extends the lease every
``ttl / 3``. When an extension is refused (the key expired or another holder has it), or
no extension succeeds before the lease's deadline, the lease is lost: the watchdog
cancels the task running the block, and the block ends with ``LockLost`` instead of
``CancelledError``. The work never goes on believing it holds a lock it lost.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog

from quantmesh.cancel import cancel_and_wait, cancelling
from quantmesh.errors import LockError, LockLost
from quantmesh.lock.base import DistributedLock, Lease

log = structlog.get_logger(__name__)


class RenewedLease:
    """What ``renewed`` yields: the current lease (renewed in place) and whether it was lost."""

    __slots__ = ("_clock", "_in_body", "lease", "lost")

    def __init__(self, lease: Lease, clock: Callable[[], float]) -> None:
        self.lease = lease
        self.lost = False
        self._clock = clock
        self._in_body = True

    @property
    def fence(self) -> int:
        return self.lease.fence

    def valid(self) -> bool:
        """True while the block runs and the lease is neither lost nor past its deadline
        (after the block the lease is released: anything still holding this says no)."""
        return self._in_body and not self.lost and self._clock() < self.lease.deadline

    def deadline(self) -> float:
        """The ``time.monotonic()`` value up to which the lease is ours, unless lost first;
        minus infinity once it is no longer valid."""
        return self.lease.deadline if self.valid() else -math.inf

    def check(self) -> Lease:
        """The lease, or ``LockLost``: call right before acting under the lock."""
        if not self.valid():
            raise LockLost(self.lease.key)
        return self.lease


@asynccontextmanager
async def renewed(
    locker: DistributedLock,
    key: str,
    ttl: float,
    timeout: float = 0.0,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[RenewedLease]:
    """Take ``key`` (waiting up to ``timeout``), renew it while the block runs, release it.

    Raises ``LockTimeout`` when not granted in time, ``LockLost`` when the lease is lost
    during the block (the block is cancelled at its current await).
    """
    lease = await locker.lock(key, ttl, timeout)
    held = RenewedLease(lease, clock)
    task = asyncio.current_task()
    assert task is not None
    watchdog = asyncio.create_task(_watch(locker, held, ttl, task, clock), name=f"watchdog:{key}")
    try:
        yield held
    except asyncio.CancelledError:
        # Our own cancellation (and only ours) turns into LockLost.
        if held.lost and task.uncancel() == 0:
            raise LockLost(key) from None
        raise
    finally:
        held._in_body = False
        await cancel_and_wait(watchdog)
        if not held.lost:  # a lost lease is expired or another holder's: nothing to free
            await _release(locker, held.lease)
    if held.lost:
        raise LockLost(key)


async def _release(locker: DistributedLock, lease: Lease) -> None:
    try:
        released = await locker.unlock(lease)
    except LockError as exc:
        log.warning("lock_release_failed", key=lease.key, error=str(exc))
        return
    if not released:
        log.warning("lock_expired_while_held", key=lease.key)


async def _watch(
    locker: DistributedLock,
    held: RenewedLease,
    ttl: float,
    task: asyncio.Task[object],
    clock: Callable[[], float],
) -> None:
    """Extend every ``ttl / 3``; on refusal or a missed deadline, mark lost and cancel."""
    period = ttl / 3
    delay = period
    while True:
        await asyncio.sleep(delay)
        left = held.lease.deadline - clock()
        renewed: Lease | None = None
        try:
            if left > 0:
                # The lease's own deadline bounds the wait, whatever the socket timeout.
                async with asyncio.timeout(left):
                    renewed = await locker.extend(held.lease, ttl)
        except (LockError, TimeoutError) as exc:
            if cancelling():
                # Our own cancellation, turned into an error on the way (a timeout that
                # expired at the same moment, a client that reports it as a lost
                # connection): stop, or whoever waits for the watchdog waits forever.
                raise asyncio.CancelledError from exc
            left = held.lease.deadline - clock()
            if left > 0:
                log.warning("lock_extend_failed", key=held.lease.key, error=str(exc) or "timeout")
                delay = min(period, left / 2)
                continue
        if cancelling():
            # Our own cancellation, swallowed by the client as its answer arrived (Python
            # 3.11's wait_for): stop now, or whoever waits for the watchdog waits out its
            # patience - a hand-off or a release stalled for seconds.
            raise asyncio.CancelledError
        if renewed is None:
            held.lost = True
            log.error("lock_lost", key=held.lease.key, fence=held.lease.fence)
            if held._in_body:
                task.cancel(f"lock {held.lease.key} lost")
            return
        held.lease = renewed
        delay = period
