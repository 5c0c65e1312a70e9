"""The daily summary: when it runs (pure), on a fake clock, and what it reads from a real
(SQLite) repository."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.grid.state import LevelState
from quantmesh.notify.events import Event, SymbolDay
from quantmesh.notify.summary import DailySummary, next_run
from quantmesh.wiring import read_day
from tests.storage.support import fill, round_trip
from tests.trading.support import make_repository

from .support import Recorder

pytestmark = pytest.mark.timeout(20)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_next_run_is_the_next_utc_time_of_day_strictly_after_now() -> None:
    at = time(21, 0)
    assert next_run(ts("2026-12-04 20:59:59"), at) == ts("2026-12-04 21:00:00")
    assert next_run(ts("2026-12-04 21:00:00"), at) == ts("2026-12-05 21:00:00")
    assert next_run(ts("2026-12-04 23:30:00"), at) == ts("2026-12-05 21:00:00")
    assert next_run(ts("2026-12-31 22:00:00"), time(0, 0)) == ts("2027-01-01 00:00:00")


class FakeWallClock:
    """Wall-clock seconds that move only when the summary sleeps."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_the_summary_goes_out_once_a_day_at_the_configured_time() -> None:
    clock = FakeWallClock(ts("2026-12-04 18:30:00"))
    asked: list[tuple[float, float]] = []

    async def day(since: float, until: float) -> list[SymbolDay]:
        asked.append((since, until))
        return [
            SymbolDay("ETH/USDT", 4, Decimal("1.25"), Decimal("0.1"), Decimal("0.03"), Decimal(60))
        ]

    recorder = Recorder()
    summary = DailySummary(time(21, 0), day, wall_clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(summary.run(recorder))
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while len(recorder.events) < 2:  # the fake clock runs as fast as the loop turns
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
    finally:
        task.cancel()
    first, second = recorder.events[:2]
    assert asked[:2] == [
        (ts("2026-12-03 21:00:00"), ts("2026-12-04 21:00:00")),
        (ts("2026-12-04 21:00:00"), ts("2026-12-05 21:00:00")),
    ]
    assert clock.slept[:2] == [2.5 * 3600, 86400.0]
    assert first.kind == "daily_summary" and first.scope == "instance"
    assert first.title == "Daily summary 2026-12-04" and second.data["day"] == "2026-12-05"
    assert first.data["symbols"] == [
        {
            "symbol": "ETH/USDT",
            "round_trips": 4,
            "realized_pnl": "1.25",
            "fees": "0.1",
            "inventory": "0.03",
            "inventory_value": "60",
        }
    ]


async def test_a_summary_whose_read_fails_says_it_is_incomplete() -> None:
    async def day(since: float, until: float) -> list[SymbolDay]:
        raise ConnectionError("database down")

    summary = DailySummary(time(0, 0), day)
    event: Event = await summary.report(0.0, 86400.0)
    assert event.data["error"] == "ConnectionError: database down"
    assert "incomplete: ConnectionError: database down" in event.text


async def test_the_day_is_read_from_the_repository(tmp_path: Path) -> None:
    repository = make_repository(tmp_path)
    await repository.start()
    try:
        since, until = ts("2026-12-03 21:00:00"), ts("2026-12-04 21:00:00")
        await repository.init_grid("ETH/USDT", Decimal(2000))
        await repository.save_levels(
            "ETH/USDT", [LevelState(-1, Decimal("0.015"), Decimal(30))], fence=1
        )
        await repository.save_last_price("ETH/USDT", Decimal(2100), until - 60)
        await repository.save_round_trips(
            [
                round_trip(0, 1, pnl="0.5", closed_at=since + 10),
                round_trip(1, 1, pnl="0.25", closed_at=until - 1),
                round_trip(2, 1, pnl="9", closed_at=since - 1),  # the day before
                round_trip(3, 1, pnl="9", closed_at=until),  # the next day
            ]
        )
        await repository.save_fills(
            [
                fill("t1", fee="0.03", ts=since + 5),
                fill("t2", side="sell", fee="0.02", ts=until - 2, client_order_id="c2"),
                fill("t3", fee="5", ts=since - 5, client_order_id="c3"),
            ]
        )
        days = await read_day(repository, ["ETH/USDT", "BTC/USDT"], since, until)
    finally:
        await repository.close()
    btc, eth = days
    assert eth == SymbolDay(
        "ETH/USDT", 2, Decimal("0.75"), Decimal("0.05"), Decimal("0.015"), Decimal("31.5")
    )
    assert btc == SymbolDay("BTC/USDT", 0, Decimal(0), Decimal(0), Decimal(0), None)
