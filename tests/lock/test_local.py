"""LocalLock and the waiting loop, on a hand-driven clock (no I/O)."""

from __future__ import annotations

import pytest

from quantmesh.errors import LockLost, LockTimeout
from quantmesh.lock.base import wait_lock
from quantmesh.lock.local import LocalLock
from tests.support import FakeClock


async def test_local_leases_exclude_expire_and_belong_to_their_holder() -> None:
    clock, wall = FakeClock(1000.0), FakeClock(1_800_000_000.0)
    lock = LocalLock(clock=clock, wall_clock=wall)
    first = await lock.try_lock("k", 5.0)
    assert first is not None and first.deadline == clock.now + 5
    assert await lock.try_lock("k", 5.0) is None
    assert await lock.try_lock("other", 5.0) is not None

    clock.now += 5.0  # expired
    second = await lock.try_lock("k", 5.0)
    assert second is not None and second.fence > first.fence
    assert await lock.unlock(first) is False  # not the holder any more
    assert await lock.extend(first, 5.0) is None
    extended = await lock.extend(second, 10.0)
    assert extended is not None and extended.deadline == clock.now + 10
    assert await lock.unlock(extended) is True
    assert await lock.try_lock("k", 5.0) is not None


async def test_local_fences_follow_the_wall_clock_so_they_stay_above_redis_fences() -> None:
    clock, wall = FakeClock(1000.0), FakeClock(1_800_000_000.0)
    lock = LocalLock(clock=clock, wall_clock=wall)
    lease = await lock.try_lock("k", 5.0)
    assert lease is not None and lease.fence == int(wall.now * 1_000_000)
    wall.now -= 10  # the wall clock stepped back: fences still grow
    again = await lock.try_lock("j", 5.0)
    assert again is not None and again.fence == lease.fence + 1


async def test_wait_lock_retries_with_backoff_until_granted_or_timed_out() -> None:
    clock = FakeClock(1000.0)
    lock = LocalLock(clock=clock)
    held = await lock.try_lock("k", 0.5)
    assert held is not None
    lease = await wait_lock(lock.try_lock, "k", 1.0, 2.0, clock=clock, sleep=clock.sleep)
    assert lease.fence > held.fence and clock.now >= 1000.5
    with pytest.raises(LockTimeout, match=r"still held elsewhere after 0\.2 s"):
        await wait_lock(lock.try_lock, "k", 1.0, 0.2, clock=clock, sleep=clock.sleep)


async def test_a_local_hold_is_released_and_its_loss_is_reported() -> None:
    lock = LocalLock()
    async with lock.renewed("k", 5.0) as held:
        assert held.valid() and held.check() is held.lease
    assert await lock.try_lock("k", 5.0) is not None  # released on exit
    with pytest.raises(LockLost):
        async with lock.renewed("j", 5.0) as held:
            held.lost = True  # as the watchdog marks it
            held.check()
