"""The interpreter tuned for a process that trades: its lock's switch interval, and the
long-lived heap kept out of the cyclic garbage collector's scans.

The database thread runs Python between its statements: the event loop gets the
interpreter's lock back within ``SWITCH_INTERVAL`` of asking for it, not CPython's 5 ms -
which a tick or fill arriving while a write is stored would add to its order. What lives
as long as the process or its traders (modules, settings, compiled statements, loaded
grids, books, sessions) is frozen out of the collector's sight: a full collection then
scans what trading allocated and takes a few milliseconds, not tens, between a tick and
its order.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Sequence
from typing import Protocol

SWITCH_INTERVAL = 0.0005  # seconds a thread holds the interpreter lock while another waits
HEAP_POLL = 0.05  # seconds between looks at whether every trader is ready (StartedHeap)


class _Readied(Protocol):
    @property
    def ready(self) -> asyncio.Event: ...


def tune_interpreter() -> None:
    """Set the switch interval and freeze what start-up built: once a process, before it
    runs."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


class StartedHeap:
    """The traders' start-up state out of the cyclic collector's scans, as
    ``tune_interpreter`` keeps the process's start-up out of them.

    Loaded grids, books, sessions and compiled statements live as long as their traders;
    left in the collector's sight, every full collection scans them: tens of milliseconds
    at 200 symbols, during which no tick is taken. ``run`` freezes the heap once every
    trader is ready (after a full collection, so only what is alive is frozen); a trader
    that leaves (``release``) unfreezes it, so what it leaves behind can be collected, and
    the heap is frozen again once every trader is ready again.
    """

    def __init__(self, traders: Sequence[_Readied], *, poll: float = HEAP_POLL) -> None:
        self._traders = traders
        self._poll = poll
        self._frozen = False
        self._released = asyncio.Event()

    async def run(self) -> None:
        while True:
            if self._frozen:
                await self._released.wait()
                self._released.clear()
                continue
            await asyncio.sleep(self._poll)
            if self._traders and all(t.ready.is_set() for t in self._traders):
                gc.collect()
                gc.freeze()
                self._frozen = True

    def release(self) -> None:
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
            self._released.set()
