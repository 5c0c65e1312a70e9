"""WarningThrottle: one warning per (event, key) per interval, with the count held back."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from quantmesh.observability.throttle import WarningThrottle
from tests.support import FakeClock


class Recorder:
    """Collects what a logger's ``warning`` was called with."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def test_a_storm_is_one_line_per_interval_with_the_count_held_back() -> None:
    clock = FakeClock(1000.0)
    throttle = WarningThrottle(10.0, clock=clock)
    out = Recorder()
    logged = []
    for _ in range(25):  # 80 a second for 25 s
        for _ in range(80):
            logged.append(throttle.warning(out, "lock_unavailable", "ETHUSDT", error="down"))
        clock.now += 1.0
    assert out.lines == [
        ("lock_unavailable", {"error": "down"}),
        ("lock_unavailable", {"error": "down", "suppressed": 799}),
        ("lock_unavailable", {"error": "down", "suppressed": 799}),
    ]
    assert sum(logged) == 3
    assert throttle.drain("lock_unavailable", "ETHUSDT") == 399  # the last 5 s, unreported
    assert throttle.drain("lock_unavailable", "ETHUSDT") == 0


def test_keys_and_events_are_throttled_apart() -> None:
    clock = FakeClock(1000.0)
    throttle = WarningThrottle(5.0, clock=clock)
    out = Recorder()
    for symbol in ("ETHUSDT", "BTCUSDT", "ETHUSDT", "BTCUSDT"):
        throttle.warning(out, "lock_unavailable", symbol, symbol=symbol)
    throttle.warning(out, "lock_error", "ETHUSDT", symbol="ETHUSDT")
    assert out.lines == [
        ("lock_unavailable", {"symbol": "ETHUSDT"}),
        ("lock_unavailable", {"symbol": "BTCUSDT"}),
        ("lock_error", {"symbol": "ETHUSDT"}),
    ]
    clock.now += 4.999
    assert throttle.admit("lock_unavailable", "ETHUSDT") is None
    clock.now += 0.001  # a whole interval after the last line: out again, with the count
    assert throttle.admit("lock_unavailable", "ETHUSDT") == 2
    assert throttle.admit("lock_unavailable", "BTCUSDT") == 1


def test_after_a_drain_the_next_warning_goes_out_at_once() -> None:
    clock = FakeClock(1000.0)
    throttle = WarningThrottle(10.0, clock=clock)
    assert throttle.admit("lock_unavailable", "ETHUSDT") == 0
    assert throttle.admit("lock_unavailable", "ETHUSDT") is None
    assert throttle.drain("lock_unavailable", "ETHUSDT") == 1  # the condition ended
    clock.now += 1.0
    assert throttle.admit("lock_unavailable", "ETHUSDT") == 0  # a new one: logged


def test_an_interval_of_zero_logs_everything() -> None:
    throttle = WarningThrottle(0.0, clock=FakeClock(1000.0))
    assert [throttle.admit("e", "k") for _ in range(3)] == [0, 0, 0]


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        WarningThrottle(-1.0)


def test_it_logs_through_structlog() -> None:
    throttle = WarningThrottle(10.0, clock=FakeClock(1000.0))
    log = structlog.get_logger("test")
    with capture_logs() as logs:
        for _ in range(3):
            throttle.warning(log, "lock_unavailable", "ETHUSDT", key="{order:x:ETHUSDT}:1")
    assert logs == [
        {"event": "lock_unavailable", "key": "{order:x:ETHUSDT}:1", "log_level": "warning"}
    ]


def test_idle_keys_are_swept_but_counts_held_back_are_kept() -> None:
    clock = FakeClock(1000.0)
    throttle = WarningThrottle(1.0, clock=clock)
    throttle.admit("e", "busy")
    throttle.admit("e", "busy")  # one held back
    for i in range(10_000):
        throttle.admit("e", i)
    clock.now += 2.0
    throttle.admit("e", "new")  # the sweep
    assert len(throttle._entries) == 2
    assert throttle.drain("e", "busy") == 1
