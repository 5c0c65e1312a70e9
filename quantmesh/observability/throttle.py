"""``WarningThrottle``: a warning repeated many times a second, logged once per interval.

For warnings one condition raises on every attempt - the lock backend down while each
tick of each symbol tries its levels - where a log line per attempt buries everything
else. One throttle per component, keys per symbol (bounded); the event name is part of
the key, so one throttle serves several warnings::

    throttle = WarningThrottle(10.0)
    ...
    throttle.warning(log, "lock_unavailable", symbol, key=lock_key, error=str(exc))

- the first warning of an (event, key) goes out at once;
- the next ones within ``interval`` are counted, not logged;
- the first one after it goes out with ``suppressed=N``, the number held back;
- when the condition ends, ``drain`` hands over the count still held back, for a closing
  line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol

# Entries kept before the idle ones (nothing held back, interval over) are swept.
_PRUNE_AT = 10_000


class WarningLogger(Protocol):
    """What ``WarningThrottle.warning`` logs to: a structlog logger."""

    def warning(self, event: str, **fields: Any) -> Any: ...


class _Entry:
    __slots__ = ("logged_at", "suppressed")

    def __init__(self, logged_at: float) -> None:
        self.logged_at = logged_at
        self.suppressed = 0


class WarningThrottle:
    """At most one warning per (event, key) per ``interval`` seconds; counts the rest."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval >= 0:
            raise ValueError(f"throttle interval must be >= 0 seconds, got {interval!r}")
        self.interval = interval
        self._clock = clock
        self._entries: dict[tuple[str, Hashable], _Entry] = {}

    def admit(self, event: str, key: Hashable, /) -> int | None:
        """Whether a warning of (``event``, ``key``) goes out now: ``None`` when it is held
        back (and counted), else how many were held back since the last one went out."""
        now = self._clock()
        pair = (event, key)
        entry = self._entries.get(pair)
        if entry is not None and now - entry.logged_at < self.interval:
            entry.suppressed += 1
            return None
        if entry is None:
            if len(self._entries) >= _PRUNE_AT:
                self._prune(now)
            self._entries[pair] = _Entry(now)
            return 0
        held_back = entry.suppressed
        entry.logged_at = now
        entry.suppressed = 0
        return held_back

    def warning(self, logger: WarningLogger, event: str, key: Hashable, /, **fields: Any) -> bool:
        """``logger.warning(event, **fields)`` unless one went out for (``event``, ``key``)
        less than ``interval`` ago; adds ``suppressed=N`` when N were held back before it.
        True when logged. ``key`` is positional, so ``fields`` may have a ``key`` too."""
        held_back = self.admit(event, key)
        if held_back is None:
            return False
        if held_back:
            fields["suppressed"] = held_back
        logger.warning(event, **fields)
        return True

    def drain(self, event: str, key: Hashable, /) -> int:
        """How many warnings of (``event``, ``key``) were held back and not yet reported;
        forgets the pair, so its next warning goes out at once."""
        entry = self._entries.pop((event, key), None)
        return 0 if entry is None else entry.suppressed

    def _prune(self, now: float) -> None:
        self._entries = {
            k: e
            for k, e in self._entries.items()
            if e.suppressed or now - e.logged_at < self.interval
        }
