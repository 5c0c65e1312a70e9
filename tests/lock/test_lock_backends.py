"""Every lock backend against its real server: exclusion, expiry, ownership, fences,
cancellation, frozen holders, slow replies, renewal and take-over. Each test runs once
per backend (``lock_backend``: Redis, etcd, PostgreSQL, MariaDB)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantmesh.errors import LockLost, LockTimeout
from quantmesh.lock.base import Lease
from quantmesh.lock.renewal import renewed
from tests.servers.proxy import TcpProxy

from .backends import LockBackend

KEY = "{order:simulated:ETHUSDT}:3"


async def wait_free(backend: LockBackend, key: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await backend.token_of(key) is not None:
        assert time.monotonic() < deadline, f"{key} still held after {timeout} s"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(30)
async def test_exactly_one_of_1000_concurrent_try_locks_from_two_lockers_wins(
    lock_backend: LockBackend,
) -> None:
    # Mutual exclusion under contention is the point, not latency: a thousand requests at
    # once queue on a loaded machine, so each may take longer than a lock call's usual bound.
    a = lock_backend.locker(pool=200, slow=True)
    b = lock_backend.locker(pool=200, slow=True)
    results = await asyncio.gather(*((a if i % 2 else b).try_lock(KEY, 5.0) for i in range(1000)))
    winners = [lease for lease in results if lease is not None]
    assert len(winners) == 1
    assert await lock_backend.token_of(KEY) == winners[0].token


@pytest.mark.timeout(20)
async def test_a_lease_expires_after_its_ttl_and_never_before_its_deadline(
    lock_backend: LockBackend,
) -> None:
    locker = lock_backend.locker()
    ttl = lock_backend.short_ttl
    first = await locker.try_lock(KEY, ttl)
    assert first is not None
    assert first.deadline < time.monotonic() + ttl
    assert await locker.try_lock(KEY, ttl) is None
    # Taken again as soon as the server lets it go: never while the first holder still
    # counts on it, and at most the server's slack after its ttl.
    while (second := await locker.try_lock(KEY, 5.0)) is None:
        assert time.monotonic() < first.deadline + lock_backend.expiry_slack
        await asyncio.sleep(0.01)
    assert time.monotonic() >= first.deadline
    assert second.fence > first.fence
    # The expired holder can neither release nor extend the new holder's lock.
    assert await locker.unlock(first) is False
    assert await locker.extend(first, 5.0) is None
    assert await lock_backend.token_of(KEY) == second.token


@pytest.mark.timeout(10)
async def test_only_the_holder_releases_or_extends(lock_backend: LockBackend) -> None:
    locker = lock_backend.locker()
    lease = await locker.try_lock(KEY, 5.0)
    assert lease is not None
    forged = Lease(KEY, "not-the-token", lease.fence, lease.deadline)
    assert await locker.unlock(forged) is False
    assert await locker.extend(forged, 60.0) is None
    assert await lock_backend.token_of(KEY) == lease.token

    extended = await locker.extend(lease, 5.0)
    assert extended is not None and extended.deadline > lease.deadline
    assert extended.fence == lease.fence and extended.token == lease.token
    assert await lock_backend.token_of(KEY) == lease.token
    assert await locker.unlock(extended) is True
    assert await lock_backend.token_of(KEY) is None
    assert await locker.unlock(extended) is False


@pytest.mark.timeout(20)
async def test_fences_strictly_increase_across_holders_levels_and_a_server_crash(
    lock_backend: LockBackend,
) -> None:
    a = lock_backend.locker()
    b = lock_backend.locker()
    fences = []
    for i in range(40):
        locker = a if i % 3 else b
        lease = await locker.try_lock(f"{{order:simulated:ETHUSDT}}:{i % 4}", 5.0)
        assert lease is not None
        fences.append(lease.fence)
        assert await locker.unlock(lease)
        if i == 20:
            await lock_backend.crash()  # Redis forgets its counter; etcd restarts
    assert all(x < y for x, y in itertools.pairwise(fences))


@pytest.mark.timeout(10)
async def test_lock_waits_for_a_release_and_times_out_otherwise(
    lock_backend: LockBackend,
) -> None:
    locker = lock_backend.locker()
    held = await locker.try_lock(KEY, 5.0)
    assert held is not None
    with pytest.raises(LockTimeout):
        await locker.lock(KEY, 5.0, timeout=0.1)
    asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(locker.unlock(held)))
    started = time.monotonic()
    lease = await locker.lock(KEY, 5.0, timeout=2.0)
    assert lease.fence > held.fence
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("steps", range(12))
async def test_an_acquire_cancelled_at_any_await_leaves_no_orphan(
    lock_backend: LockBackend, steps: int
) -> None:
    locker = lock_backend.locker()
    task = asyncio.create_task(locker.try_lock(KEY, 30.0))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    try:
        lease = await task
    except asyncio.CancelledError:
        lease = None
    if lease is not None:  # it finished before the cancel: the holder releases as usual
        assert await locker.unlock(lease)
    await locker.settle()
    assert await lock_backend.token_of(KEY) is None  # not left for the 30 s TTL


@pytest.mark.timeout(15)
async def test_an_acquire_cancelled_after_the_server_set_the_key_leaves_no_orphan(
    lock_backend: LockBackend,
) -> None:
    with TcpProxy("127.0.0.1", lock_backend.port) as proxy:
        locker = lock_backend.locker(proxy.port, slow=True)
        await locker.ping()  # connected before the delay
        proxy.delay = 0.2
        task = asyncio.create_task(locker.try_lock(KEY, 30.0))
        deadline = time.monotonic() + 5
        while await lock_backend.token_of(KEY) is None:  # set; the reply is on its way
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proxy.delay = 0.0
        await locker.settle()
        assert await lock_backend.token_of(KEY) is None


# From 1: a task cancelled before its first step never entered unlock() at all.
@pytest.mark.parametrize("steps", range(1, 12))
async def test_a_release_cancelled_at_any_await_still_releases(
    lock_backend: LockBackend, steps: int
) -> None:
    locker = lock_backend.locker()
    lease = await locker.try_lock(KEY, 30.0)
    assert lease is not None
    task = asyncio.create_task(locker.unlock(lease))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await locker.settle()
    assert await lock_backend.token_of(KEY) is None


@pytest.mark.parametrize("steps", range(1, 12))
async def test_an_extend_cancelled_at_any_await_keeps_the_old_lease(
    lock_backend: LockBackend, steps: int
) -> None:
    locker = lock_backend.locker()
    lease = await locker.try_lock(KEY, 30.0)
    assert lease is not None
    task = asyncio.create_task(locker.extend(lease, 30.0))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    try:
        renewed = await task
    except asyncio.CancelledError:
        renewed = None
    assert await locker.unlock(renewed or lease)
    await locker.settle()
    assert await lock_backend.token_of(KEY) is None


HOLDER = Path(__file__).with_name("holder.py")
ROOT = Path(__file__).resolve().parents[2]


def start_holder(backend: LockBackend, ttl: float) -> subprocess.Popen[str]:
    """``holder.py`` in its own process: takes KEY, prints its fence, waits for a line."""
    return subprocess.Popen(
        [sys.executable, str(HOLDER), *backend.holder_args(), KEY, str(ttl)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.timeout(20)
async def test_a_holder_frozen_past_its_ttl_cannot_touch_the_new_holders_lock(
    lock_backend: LockBackend,
) -> None:
    locker = lock_backend.locker()
    ttl = lock_backend.short_ttl
    proc = start_holder(lock_backend, ttl=ttl)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        old_fence = int((await asyncio.to_thread(proc.stdout.readline)).split()[0])
        frozen = time.monotonic()
        os.kill(proc.pid, signal.SIGSTOP)
        while (lease := await locker.try_lock(KEY, 5.0)) is None:  # past the holder's TTL
            assert time.monotonic() < frozen + ttl + lock_backend.expiry_slack
            await asyncio.sleep(0.01)
        assert lease.fence > old_fence
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        seen = (await asyncio.to_thread(proc.stdout.readline)).strip()
        assert seen == "expired=True extended=False released=False"
        assert await lock_backend.token_of(KEY) == lease.token
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes


@pytest.mark.timeout(20)
async def test_replies_delayed_beyond_the_ttl_mean_the_lease_is_lost(
    lock_backend: LockBackend,
) -> None:
    with TcpProxy("127.0.0.1", lock_backend.port) as proxy:
        locker = lock_backend.locker(proxy.port, slow=True)
        try:
            await locker.ping()
            proxy.delay = 0.15  # each way: 0.3 s round trip against a 0.2 s TTL
            lease = await locker.try_lock(KEY, 0.2)
            assert lease is not None  # the server granted it ...
            assert time.monotonic() >= lease.deadline  # ... but it is gone on arrival
            proxy.delay = 0.0
            await wait_free(lock_backend, KEY, 0.2 + lock_backend.expiry_slack + 0.5)

            started = time.monotonic()
            with pytest.raises(LockLost):
                async with locker.renewed(KEY, 0.6) as held:
                    proxy.delay = 0.5  # the first renewal's reply comes after the deadline
                    try:
                        await asyncio.sleep(5)
                    finally:
                        interrupted = time.monotonic() - started
                        proxy.delay = 0.0
            assert interrupted < 1.0  # cancelled at the lease's deadline, not after the work
            assert not held.valid()
        finally:
            proxy.delay = 0.0


@pytest.mark.timeout(15)
async def test_the_watchdog_keeps_a_long_hold_alive_and_releases_it(
    lock_backend: LockBackend,
) -> None:
    locker = lock_backend.locker()
    ttl = lock_backend.short_ttl
    async with renewed(locker, KEY, ttl) as held:
        first = held.lease
        # Longer than the server keeps an unrenewed lease: three TTLs, and its slack.
        await asyncio.sleep(max(3 * ttl, ttl + lock_backend.expiry_slack) + 0.1)
        assert held.valid() and held.check().fence == first.fence
        assert held.lease.deadline > first.deadline
        assert await lock_backend.token_of(KEY) == first.token
    assert await lock_backend.token_of(KEY) is None


@pytest.mark.timeout(10)
async def test_a_hold_taken_over_cancels_the_work_with_lock_lost(
    lock_backend: LockBackend,
) -> None:
    locker = lock_backend.locker()
    reached_end = False
    with pytest.raises(LockLost):
        async with renewed(locker, KEY, 0.3):
            await lock_backend.overwrite(KEY, "somebody-else")  # the key was taken over
            await asyncio.sleep(2)
            reached_end = True
    assert not reached_end
    assert await lock_backend.token_of(KEY) == "somebody-else"  # the other's key survives
