"""The ownership record's keeper and the lease watchdog end when cancelled even if the
Redis client swallowed the cancellation as it answered (Python 3.11's ``wait_for``, as redis-py uses it): a hand-off then
gives the lease back at once instead of after ``cancel_and_wait``'s patience."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from quantmesh.cancel import cancel_and_wait
from quantmesh.coordination.membership import Recorded
from quantmesh.coordination.records import OwnerRecords
from quantmesh.lock.base import Lease
from quantmesh.lock.renewal import RenewedLease, renewed
from quantmesh.notify.events import NOP
from quantmesh.observability.metrics import Metrics

ETH = "ETH/USDT"


class SwallowingFleet:
    """``record_owner`` answers even when cancelled while it waits (the client's bug)."""

    def __init__(self) -> None:
        self.calls = 0
        self.waiting = asyncio.Event()

    async def record_owner(self, *_args: Any) -> Recorded:
        self.calls += 1
        self.waiting.set()
        # the answer arrives together with the cancellation: returned, not raised
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return Recorded(stored=True, previous=None, now=time.time())


async def test_the_record_keeper_ends_when_its_cancellation_was_swallowed() -> None:
    fleet = SwallowingFleet()
    records = OwnerRecords(
        fleet,  # type: ignore[arg-type]
        lease_ttl=0.3,
        metrics=Metrics(),
        notifier=NOP,
        wall=time.time,
        paused=lambda: False,
        not_claim=lambda symbol, reason: None,
    )
    held = RenewedLease(Lease("k", "t", 1, time.monotonic() + 60), time.monotonic)
    keeper = asyncio.create_task(records.keep(ETH, held, 0.0))
    await asyncio.wait_for(fleet.waiting.wait(), 5)  # inside the client call
    # the first cancellation ends it: no second one after a (here 60 s) patience
    await asyncio.wait_for(cancel_and_wait(keeper, patience=60.0), 5)
    assert keeper.cancelled() and fleet.calls == 1


class SwallowingLocker:
    """``extend`` answers even when cancelled while it waits (the client's bug)."""

    def __init__(self) -> None:
        self.extends = 0
        self.waiting = asyncio.Event()

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        return Lease(key, "t", 1, time.monotonic() + ttl)

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        return Lease(key, "t", 1, time.monotonic() + ttl)

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        self.extends += 1
        self.waiting.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return Lease(lease.key, lease.token, lease.fence, time.monotonic() + ttl)

    async def unlock(self, lease: Lease) -> bool:
        return True

    async def close(self) -> None:
        return None


async def test_the_lease_watchdog_ends_when_its_cancellation_was_swallowed() -> None:
    """A block leaving ``renewed`` while the watchdog is inside ``extend``: the release does
    not wait out ``cancel_and_wait``'s patience (5 s), which a reload racing a failed
    symbol's release once did."""
    locker = SwallowingLocker()
    released = asyncio.Event()

    async def hold() -> None:
        async with renewed(locker, "owner:ETH", ttl=0.3):
            await locker.waiting.wait()  # the watchdog is inside extend now
        released.set()

    task = asyncio.create_task(hold())
    started = time.monotonic()
    await asyncio.wait_for(released.wait(), 3)  # patience is 5 s: one cancellation ended it
    await task
    assert locker.extends == 1 and time.monotonic() - started < 3
