"""Exponential backoff with full jitter, pure: the delays between reconnection attempts."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """``initial * 2**n`` capped at ``maximum``, each delay drawn uniformly from
    ``[delay / 2, delay]`` so many clients do not reconnect in lockstep."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial}, {maximum}")
        self._initial = initial
        self._maximum = maximum
        self._rng = rng
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling."""
        ceiling = min(self._maximum, self._initial * 2.0**self.attempts)
        self.attempts += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
