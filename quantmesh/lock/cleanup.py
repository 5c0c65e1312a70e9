"""``Cleanups``: the clean-up calls a lock backend leaves running in the background.

A release or revoke that cannot be awaited where it is decided (an acquire cancelled after
the server may have granted it, a release that failed) runs as a task of its own; the
lease's expiry on the server bounds what happens if it never ends. The backend keeps a
reference to each task until it ends, and waits for them, bounded, when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class Cleanups:
    """Background clean-up tasks of one lock backend."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (interpreter shutting down): the expiry bounds it
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait until every clean-up has ended (tests; ``close`` does it too)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, timeout: float = 2.0) -> None:
        """``settle``, for at most ``timeout`` seconds: what is left is bounded by expiry."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.settle()
