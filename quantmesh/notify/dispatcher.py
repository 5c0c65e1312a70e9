"""``Dispatcher``: the ``Notifier`` of a service with channels.

``emit`` decides at once, without awaiting, which channels want the event (its kind in
the channel's ``events``, its level at least the channel's ``min_level``) and puts it in
their queues. Single rejected orders are counted into bursts first (``bursts``). A fleet
event first goes through the election (``election``), in a task of its own, bounded in
number: only the elected instance queues it, the others count it ``deduplicated``.

``start`` starts the channels' senders and the background jobs (the daily summary);
``close`` stops the jobs, lets the queues drain for ``drain_timeout`` seconds (so the
"stopped" message goes out), then stops the senders.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.config.notifications import NotificationLevel
from quantmesh.notify.bursts import RejectionBursts
from quantmesh.notify.election import Election
from quantmesh.notify.events import Event, Notifier, level_rank
from quantmesh.notify.queue import ChannelQueue

log = structlog.get_logger(__name__)

# A background job of the notifier (the daily summary): runs until cancelled, emitting
# through the notifier it is given.
Job = Callable[[Notifier], Coroutine[Any, Any, None]]
MAX_ELECTIONS: Final = 100  # fleet events waiting for their election at once
DRAIN_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class Route:
    """A channel's queue and what it wants."""

    queue: ChannelQueue
    events: frozenset[str]
    min_level: NotificationLevel

    def wants(self, event: Event) -> bool:
        return event.kind in self.events and level_rank(event.level) >= level_rank(self.min_level)


class Dispatcher:
    """Routes events to the channels' queues; see the module docstring."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        election: Election | None = None,
        bursts: RejectionBursts | None = None,
        jobs: Sequence[Job] = (),
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        self.routes = list(routes)
        self._election = election  # None: alone, every event is this instance's to send
        self._bursts = bursts if bursts is not None else RejectionBursts(5, 60.0)
        self._jobs = list(jobs)
        self._drain_timeout = drain_timeout
        self._elections: set[asyncio.Task[None]] = set()
        self._running: list[asyncio.Task[None]] = []

    # emitting ------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue ``event`` for the channels that want it; never waits, never raises."""
        try:
            self._route(event)
        except Exception:  # a notification must never break what emitted it
            log.exception("notification_emit_failed", kind=event.kind)

    def _route(self, event: Event) -> None:
        if event.kind == "order_rejected":
            burst = self._bursts.note(event.symbol or "", str(event.data.get("reason", "")))
            if burst is None:
                return
            event = burst
        routes = [route for route in self.routes if route.wants(event)]
        if not routes:
            return
        if event.scope != "fleet" or self._election is None:
            for route in routes:
                route.queue.put(event)
            return
        if len(self._elections) >= MAX_ELECTIONS:
            for route in routes:
                route.queue.count("dropped")
            log.warning("notification_dropped", kind=event.kind, detail="too many elections")
            return
        task = asyncio.get_running_loop().create_task(
            self._elect(event, routes), name=f"notify-election:{event.key}"
        )
        self._elections.add(task)
        task.add_done_callback(self._elections.discard)

    async def _elect(self, event: Event, routes: list[Route]) -> None:
        assert self._election is not None  # only fleet events with an election come here
        if await self._election.elect(event.key or event.kind):
            for route in routes:
                route.queue.put(event)
            return
        for route in routes:
            route.queue.count("deduplicated")
        log.info("notification_deduplicated", kind=event.kind, key=event.key)

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        for route in self.routes:
            route.queue.start()
        for job in self._jobs:
            self._running.append(asyncio.create_task(job(self), name="notify-job"))

    async def close(self, *, drain: bool = True) -> None:
        """Stop the jobs, let the queues drain (within ``drain_timeout``, when ``drain``),
        stop the senders. Never raises but cancellation: trading is over, its result
        stands."""
        await cancel_and_wait(*self._running)
        self._running.clear()
        if drain:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_timeout):
                    if self._elections:
                        await asyncio.wait(list(self._elections))
                    for route in self.routes:
                        await route.queue.idle()
        await cancel_and_wait(*self._elections)
        for route in self.routes:
            try:
                await route.queue.close()
            except Exception:  # a channel that fails to close must not fail the shutdown
                log.exception("notification_channel_close_failed", channel=route.queue.name)
