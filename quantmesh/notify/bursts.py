"""``RejectionBursts``: many orders of one symbol rejected in a short time make one
message, not one per order. Pure: the clock is passed in."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from quantmesh.notify.events import Event, orders_rejected


class RejectionBursts:
    """Counts rejections per symbol; ``threshold`` of them within ``window`` seconds make
    one ``orders_rejected`` event, then that symbol is quiet for ``window`` seconds."""

    def __init__(
        self, threshold: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.window = window
        self._clock = clock
        self._seen: dict[str, collections.deque[tuple[float, str]]] = {}
        self._quiet_until: dict[str, float] = {}

    def note(self, symbol: str, reason: str) -> Event | None:
        """One rejection; the burst's event when this one completes a burst."""
        now = self._clock()
        if now < self._quiet_until.get(symbol, -1.0):
            return None
        seen = self._seen.setdefault(symbol, collections.deque())
        seen.append((now, reason))
        while seen and seen[0][0] <= now - self.window:
            seen.popleft()
        if len(seen) < self.threshold:
            return None
        reasons = collections.Counter(reason for _, reason in seen)
        count = len(seen)
        seen.clear()
        self._quiet_until[symbol] = now + self.window
        return orders_rejected(symbol, count, self.window, dict(reasons))
