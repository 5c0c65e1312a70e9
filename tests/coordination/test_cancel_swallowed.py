"""The ownership record's keeper ends when cancelled even if the Redis client swallowed the
cancellation as it answered (Python 3.11's ``wait_for``, as redis-py uses it): a hand-off then
gives the lease back at once instead of after ``cancel_and_wait``'s patience."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from quantmesh.cancel import cancel_and_wait
from quantmesh.coordination.coordinator import Coordinator, member_of
from quantmesh.coordination.fleet import Recorded
from quantmesh.lock.base import Lease
from quantmesh.lock.renewal import RenewedLease
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
    coordinator = Coordinator(member_of("a", "master", (ETH,)), metrics=Metrics(), lease_ttl=0.3)
    fleet = SwallowingFleet()
    held = RenewedLease(Lease("k", "t", 1, time.monotonic() + 60), time.monotonic)
    keeper = asyncio.create_task(coordinator._keep_record(fleet, ETH, held, 0.0))  # type: ignore[arg-type]
    await asyncio.wait_for(fleet.waiting.wait(), 5)  # inside the client call
    # the first cancellation ends it: no second one after a (here 60 s) patience
    await asyncio.wait_for(cancel_and_wait(keeper, patience=60.0), 5)
    assert keeper.cancelled() and fleet.calls == 1
