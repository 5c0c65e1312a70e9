"""The lock the daemon uses with ``distributed_lock.enabled``: the lock server's (Redis,
etcd), health-checked.

Three modes, visible as ``state`` and the ``quantmesh_lock_mode{mode}`` gauge:

- ``distributed``: every call goes to the lock server.
- ``halted`` (``fallback_mode: halt``, the server down): no lease is granted, so the trader
  places and cancels nothing; ``ready`` is false. The safe choice whenever another
  instance might be trading the same symbols.
- ``single_instance`` (``fallback_mode: single_instance``, the server down): leases come from
  an in-process ``LocalLock``, logged loudly. Correct only if no other instance runs:
  two instances in this mode can both place the same order.

The backend is checked every ``health_check_interval`` seconds, and at once after a call
fails to reach it. A call that fails while the mode is still ``distributed`` grants no
lease (never fail open); only a failed health check changes the mode. A passing check
returns to ``distributed`` by itself. Leases keep going to the backend that granted them.

While the backend is down the checks come faster: the first 0.1 s after the failed one,
then doubling up to ``health_check_interval``. A Redis that is back after a blip (a
restart, a failover) is noticed within a fraction of a second, not a whole interval
later, while a long outage is probed no more often than a healthy backend is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.errors import LockError, LockUnavailable
from quantmesh.lock.base import Lease
from quantmesh.lock.health import LockHealth
from quantmesh.lock.local import LOCAL_TOKEN_PREFIX, LocalLock
from quantmesh.lock.renewal import RenewedLease, renewed
from quantmesh.notify.events import NOP, Notifier, lock_halted, lock_recovered
from quantmesh.observability.metrics import Metrics

log = structlog.get_logger(__name__)

# First re-check after a failed health check; doubled per failed check up to the interval.
FIRST_RETRY = 0.1

FallbackMode = Literal["halt", "single_instance"]
LockState = Literal["distributed", "halted", "single_instance"]
_STATES: tuple[LockState, ...] = ("distributed", "halted", "single_instance")


class CheckedLock(Protocol):
    """A distributed lock with a health check (``RedisLock``, ``EtcdLock``)."""

    async def try_lock(self, key: str, ttl: float) -> Lease | None: ...

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease: ...

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        """``async with locker.renewed(key, ttl)``: a lease renewed by a watchdog, always released."""
        return renewed(self, key, ttl, timeout)

    async def unlock(self, lease: Lease) -> bool: ...

    async def extend(self, lease: Lease, ttl: float) -> Lease | None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class FailoverLock:
    """Wraps a lock server's lock with health checks and the configured fallback;
    ``backend`` is the server's name (``distributed_lock.type``) in its health."""

    def __init__(
        self,
        primary: CheckedLock,
        *,
        fallback_mode: FallbackMode,
        health_check_interval: float,
        metrics: Metrics | None = None,
        local: LocalLock | None = None,
        notifier: Notifier = NOP,
        clock: Callable[[], float] = time.monotonic,
        backend: str = "redis",
    ) -> None:
        self._primary = primary
        self.backend = backend
        self._notifier = notifier
        self._clock = clock
        self._down_since: float | None = None
        self.fallback_mode = fallback_mode
        self.health_check_interval = health_check_interval
        self._metrics = metrics
        self._local = local if local is not None else LocalLock()
        self._state: LockState = "distributed"
        self.reason = ""
        self._failed_checks = 0  # in a row; 0 while healthy
        self._wake = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._report(up=True)

    # health ------------------------------------------------------------------------------

    @property
    def state(self) -> LockState:
        return self._state

    @property
    def healthy(self) -> bool:
        """The backend passed its last health check."""
        return self._state == "distributed"

    @property
    def ready(self) -> bool:
        """False while halted: this instance places no orders (for the readiness probe)."""
        return self._state != "halted"

    def health(self) -> LockHealth:
        return LockHealth(backend=self.backend, mode=self._state, reason=self.reason)

    async def start(self) -> None:
        """Check the backend once and start the periodic health check."""
        await self.check()
        self._ensure_monitor()

    def _ensure_monitor(self) -> None:
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(
                self._watch(), name="lock-health"
            )

    def next_check_in(self) -> float:
        """Seconds until the next scheduled health check: ``health_check_interval`` while
        healthy; after failed checks ``FIRST_RETRY`` doubled per failure, capped at the
        interval."""
        if self._failed_checks == 0:
            return self.health_check_interval
        retry = FIRST_RETRY * 2.0 ** min(self._failed_checks - 1, 30)
        return min(retry, self.health_check_interval)

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.next_check_in()):
                    await self._wake.wait()
            self._wake.clear()
            await self.check()

    async def check(self) -> bool:
        """One health check; moves between modes and says so. True when healthy."""
        try:
            await self._primary.ping()
        except LockError as exc:
            self._down(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - unsure means down: never fail open
            self._down(f"{type(exc).__name__}: {exc}")
            return False
        self._up()
        return True

    def _down(self, reason: str) -> None:
        self.reason = reason
        self._failed_checks += 1
        state: LockState = "halted" if self.fallback_mode == "halt" else "single_instance"
        if state == self._state:
            return
        self._state = state
        self._down_since = self._clock()
        self._report(up=False)
        self._notifier.emit(lock_halted(state, reason))
        if state == "halted":
            log.error(
                "lock_backend_down_halted",
                reason=reason,
                effect="no orders are placed or cancelled until the lock backend is back",
            )
        else:
            log.critical(
                "lock_backend_down_single_instance",
                reason=reason,
                effect="leases now come from a local lock: if any other instance is "
                "running, both may place the same orders",
            )

    def _up(self) -> None:
        if self._state != "distributed":
            log.warning("lock_backend_recovered", previous=self._state)
            down_since = self._down_since if self._down_since is not None else self._clock()
            self._notifier.emit(lock_recovered(self._state, self._clock() - down_since))
            self._down_since = None
        self._state = "distributed"
        self._failed_checks = 0
        self.reason = ""
        self._report(up=True)

    def _report(self, *, up: bool) -> None:
        if self._metrics is None:
            return
        self._metrics.lock_backend_up.set(1 if up else 0)
        for state in _STATES:
            self._metrics.lock_mode.labels(state).set(1 if state == self._state else 0)

    def _suspect(self) -> None:
        """A call could not reach the backend: check now rather than at the next interval."""
        self._wake.set()

    # the lock ----------------------------------------------------------------------------

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        self._ensure_monitor()
        state = self._state
        if state == "distributed":
            try:
                return await self._primary.try_lock(key, ttl)
            except LockUnavailable:
                self._suspect()
                raise
        if state == "halted":
            raise LockUnavailable(f"lock backend down, fallback_mode halt: {self.reason}")
        return await self._local.try_lock(key, ttl)

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        self._ensure_monitor()
        if self._state == "distributed":
            try:
                return await self._primary.lock(key, ttl, timeout)
            except LockUnavailable:
                self._suspect()
                raise
        if self._state == "halted":
            raise LockUnavailable(f"lock backend down, fallback_mode halt: {self.reason}")
        return await self._local.lock(key, ttl, timeout)

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        """``async with locker.renewed(key, ttl)``: a lease renewed by a watchdog, always released."""
        return renewed(self, key, ttl, timeout)

    async def unlock(self, lease: Lease) -> bool:
        if lease.token.startswith(LOCAL_TOKEN_PREFIX):
            return await self._local.unlock(lease)
        try:
            return await self._primary.unlock(lease)
        except LockUnavailable:
            self._suspect()
            raise

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        if lease.token.startswith(LOCAL_TOKEN_PREFIX):
            return await self._local.extend(lease, ttl)
        try:
            return await self._primary.extend(lease, ttl)
        except LockUnavailable:
            self._suspect()
            raise

    async def close(self) -> None:
        if self._monitor is not None:
            await cancel_and_wait(self._monitor)
            self._monitor = None
        await self._local.close()
        await self._primary.close()
