"""The daily summary: each instance, once a day at ``notifications.daily_summary_at``
(UTC), tells what its symbols did over the 24 hours before - round trips, realized PnL,
fees, inventory and its value at the last price, per symbol.

``next_run`` is plain datetime arithmetic; ``DailySummary.run`` sleeps until then on an
injectable wall clock and sleep, reads the day (``read_day``, from the repository, built
by ``wiring``) and emits one ``daily_summary`` event.
"""

from __future__ import annotations

import asyncio
import time as timelib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Final

import structlog

from quantmesh.notify.events import Event, Notifier, SymbolDay, daily_summary

log = structlog.get_logger(__name__)

DAY: Final = 86400.0
READ_TIMEOUT: Final = 60.0

# The symbols' day between two wall-clock times (Unix seconds): the repository's view.
ReadDay = Callable[[float, float], Awaitable[Sequence[SymbolDay]]]


def next_run(now: float, at: time) -> float:
    """The first moment strictly after ``now`` (Unix seconds) whose UTC time is ``at``."""
    current = datetime.fromtimestamp(now, UTC)
    candidate = datetime.combine(current.date(), at, tzinfo=UTC)
    if candidate.timestamp() <= now:
        candidate += timedelta(days=1)
    return candidate.timestamp()


class DailySummary:
    """Emits this instance's summary every day at ``at`` (UTC); see the module docstring."""

    def __init__(
        self,
        at: time,
        read_day: ReadDay,
        *,
        wall_clock: Callable[[], float] = timelib.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.at = at
        self._read_day = read_day
        self._wall = wall_clock
        self._sleep = sleep

    async def run(self, notifier: Notifier) -> None:
        """Until cancelled: wait for the next ``at``, then report the day before it to
        ``notifier``."""
        due = next_run(self._wall(), self.at)
        while True:
            left = due - self._wall()
            if left > 0:
                await self._sleep(left)
                continue  # the clock may have moved less (or more) than asked
            notifier.emit(await self.report(due - DAY, due))
            due = next_run(max(self._wall(), due), self.at)

    async def report(self, since: float, until: float) -> Event:
        """The summary of ``[since, until)``; when the read fails, it says why it is
        incomplete."""
        day = datetime.fromtimestamp(until, UTC).date().isoformat()
        symbols: Sequence[SymbolDay] = ()
        error: str | None = None
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                symbols = await self._read_day(since, until)
        except Exception as exc:  # noqa: BLE001 - the report says it is incomplete, and why
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("daily_summary_incomplete", error=error)
        return daily_summary(day, symbols, error)
