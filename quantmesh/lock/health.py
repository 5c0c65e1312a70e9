"""What a lock backend can do now: the ``lock`` readiness check and status section.

Every lock the service runs reports a ``LockHealth``; ``/readyz`` and ``/api/status`` read
it without knowing which backend it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantmesh.observability.health import Check


@dataclass(frozen=True, slots=True)
class LockHealth:
    """``backend``: ``none`` (one instance, no lock server) or the lock server's
    ``distributed_lock.type`` (``redis``, ``etcd``); ``mode``:
    ``distributed``, ``halted`` or ``single_instance``; ``reason``: why the backend is
    down, empty while it is healthy."""

    backend: str
    mode: str
    reason: str = ""


# A lone instance's lock: no server, always granted.
NO_SERVER = LockHealth(backend="none", mode="single_instance")


def lock_status(health: LockHealth) -> dict[str, str]:
    """The ``lock`` section of ``/api/status``."""
    if health.backend == "none":
        return {"backend": "none", "mode": "single_instance"}
    return {"backend": health.backend, "mode": health.mode, "reason": health.reason}


def lock_check(health: LockHealth) -> Check:
    """The ``lock`` readiness check: fails while halted, saying why."""
    if health.backend == "none":
        return Check(True, "single instance: no lock server")
    if health.mode == "halted":
        return Check(False, f"lock backend down, placing nothing (fallback_mode halt): "
                     f"{health.reason}")  # fmt: skip
    if health.mode == "single_instance":
        return Check(True, f"lock backend down, trading on a local lock: {health.reason}")
    return Check(True, "lock backend healthy")
