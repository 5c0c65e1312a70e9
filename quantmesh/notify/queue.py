"""``ChannelQueue``: the bounded queue in front of one channel, and its sender.

``put`` never waits: the event goes in the queue, or, when the queue is full, it is
dropped and counted (``dropped``). One task per channel sends the queued events in order;
a failed attempt is retried with exponential backoff (``first_retry``, 1 s, doubled up
to ``MAX_RETRY``), waiting at least what a 429's ``Retry-After`` asked (up to
``MAX_RETRY_AFTER``), until ``retry_for`` seconds after the event was queued; a request
the receiver refuses for itself (4xx other than 408 and 429) is not retried.

Every outcome is counted in ``quantmesh_notifications_total{channel,outcome}``: ``sent``,
``retried`` (an attempt failed, another follows), ``failed`` (given up), ``dropped``
(queue full), ``abandoned`` (still queued when the service stopped), ``deduplicated``
(another instance of the fleet sends it; counted by the dispatcher).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from prometheus_client import Counter

from quantmesh.cancel import cancel_and_wait
from quantmesh.notify.channels import Channel, DeliveryFailed
from quantmesh.notify.events import Event
from quantmesh.observability.throttle import WarningThrottle
from quantmesh.secrets import redact

log = structlog.get_logger(__name__)

FIRST_RETRY: Final = 1.0
MAX_RETRY: Final = 60.0
MAX_RETRY_AFTER: Final = 600.0  # a receiver asking for longer waits this long, then is tried
DROP_LOG_INTERVAL: Final = 10.0  # drops of one kind logged at most this often


class ChannelQueue:
    """Queues events for ``channel`` and sends them in order; see the module docstring.
    ``clock`` (monotonic seconds) and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        channel: Channel,
        *,
        size: int,
        counter: Counter,
        retry_for: float = 3600.0,
        first_retry: float = FIRST_RETRY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.channel = channel
        self.name = channel.name
        self.size = size
        self._counter = counter
        self._retry_for = retry_for
        self._first_retry = first_retry
        self._clock = clock
        self._sleep = sleep
        self._items: collections.deque[tuple[Event, float]] = collections.deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._throttle = WarningThrottle(DROP_LOG_INTERVAL)  # a storm of drops: one line
        for outcome in ("sent", "retried", "failed", "dropped", "abandoned", "deduplicated"):
            counter.labels(self.name, outcome)  # exported from the start, at 0

    def count(self, outcome: str) -> None:
        self._counter.labels(self.name, outcome).inc()

    @property
    def waiting(self) -> int:
        """Events queued or being sent."""
        return len(self._items)

    def put(self, event: Event) -> bool:
        """Queue ``event``; False (dropped, counted) when the queue is full. Never waits."""
        if len(self._items) >= self.size:
            self.count("dropped")
            self._throttle.warning(
                log,
                "notification_dropped",
                event.kind,
                channel=self.name,
                kind=event.kind,
                size=self.size,
            )
            return False
        self._items.append((event, self._clock()))
        self._idle.clear()
        self._ready.set()
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"notify:{self.name}")

    async def idle(self) -> None:
        """Wait until nothing is queued (the caller bounds the wait: at shutdown)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop sending; what is still queued is counted ``abandoned``."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._items:
            log.warning("notifications_abandoned", channel=self.name, count=len(self._items))
        for _ in self._items:
            self.count("abandoned")
        self._items.clear()
        self._idle.set()
        await self.channel.close()

    async def _run(self) -> None:
        while True:
            if not self._items:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            event, queued = self._items[0]
            await self._deliver(event, queued)
            self._items.popleft()

    async def _deliver(self, event: Event, queued: float) -> None:
        """Send ``event`` until it arrives, the receiver refuses it for good, or
        ``retry_for`` has passed since it was queued; never raises but cancellation."""
        delay = self._first_retry
        attempts = 0
        while True:
            attempts += 1
            try:
                await self.channel.send(event)
            except DeliveryFailed as exc:
                reason = redact(exc.reason, self.channel.secrets())
                wait = delay
                if exc.retry_after is not None:
                    wait = max(wait, min(exc.retry_after, MAX_RETRY_AFTER))
                if not exc.retry or self._clock() + wait - queued > self._retry_for:
                    self.count("failed")
                    log.error(
                        "notification_failed",
                        channel=self.name,
                        kind=event.kind,
                        attempts=attempts,
                        error=reason,
                    )
                    return
                self.count("retried")
                log.warning(
                    "notification_retry",
                    channel=self.name,
                    kind=event.kind,
                    attempt=attempts,
                    retry_in=round(wait, 3),
                    error=reason,
                )
                await self._sleep(wait)
                delay = min(delay * 2, MAX_RETRY)
            except Exception as exc:  # noqa: BLE001 - a channel bug must not stop the queue
                self.count("failed")
                log.error(
                    "notification_failed",
                    channel=self.name,
                    kind=event.kind,
                    error=redact(f"{type(exc).__name__}: {exc}", self.channel.secrets()),
                )
                return
            else:
                self.count("sent")
                log.info("notification_sent", channel=self.name, kind=event.kind)
                return
