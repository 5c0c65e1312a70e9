"""The lock's health as /readyz and /api/status read it, whichever backend it is."""

from __future__ import annotations

from quantmesh.lock.health import LockHealth, lock_check, lock_status
from quantmesh.lock.nop import NopLock


async def test_a_lone_instance_lock_reports_no_server_and_passes() -> None:
    locker = NopLock()
    await locker.start()
    health = locker.health()
    assert lock_status(health) == {"backend": "none", "mode": "single_instance"}
    assert lock_check(health).ok and "no lock server" in lock_check(health).detail


def test_a_halted_backend_fails_readiness_with_its_reason() -> None:
    health = LockHealth(backend="redis", mode="halted", reason="Connection refused")
    check = lock_check(health)
    assert not check.ok and "Connection refused" in check.detail
    assert lock_status(health) == {
        "backend": "redis",
        "mode": "halted",
        "reason": "Connection refused",
    }


def test_a_local_fallback_passes_but_says_so() -> None:
    check = lock_check(LockHealth(backend="redis", mode="single_instance", reason="down"))
    assert check.ok and "local lock" in check.detail
