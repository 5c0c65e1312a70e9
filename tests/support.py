"""Fakes and helpers every part of the suite shares: a hand-driven clock, a free port."""

from __future__ import annotations

import socket


class FakeClock:
    """A clock that only moves when told to: ``clock()`` is ``clock.now``, which a test
    moves on (``clock.now += 5``); ``await clock.sleep(s)`` moves it on at once."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    """A TCP port nothing listens on at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
