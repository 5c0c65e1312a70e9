"""Price feeds: the random walk, the CSV replay and the async driver."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.domain import Tick
from quantmesh.errors import StartupError
from quantmesh.exchange.sim.feeds import (
    CsvReplayFeed,
    FeedStep,
    RandomWalkFeed,
    csv_replay,
    random_walk,
    round_to_tick,
    run_feed,
)
from tests.exchange.support import ETH
from tests.support import FakeClock

D = Decimal


class FakeSleep:
    """Records the delays asked for and advances a fake clock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.now += delay


def walk(
    seed: int | None, start: str = "2000", vol: float = 0.01, tick: str = "0.01"
) -> RandomWalkFeed:
    return RandomWalkFeed("ETH/USDT", D(start), vol, 1.5, D(tick), seed)


def test_random_walk_is_deterministic_for_a_seed() -> None:
    first, second, other = walk(7), walk(7), walk(8)
    a = [first.next_price() for _ in range(200)]
    assert a == [second.next_price() for _ in range(200)]
    assert a != [other.next_price() for _ in range(200)]
    assert len(set(a)) > 100  # it moves


def test_random_walk_prices_are_on_tick_and_positive() -> None:
    feed = walk(1, start="0.05", vol=0.8, tick="0.01")
    prices = [feed.next_price() for _ in range(2000)]
    assert all(p > 0 for p in prices)
    assert all(p % D("0.01") == 0 for p in prices)
    assert min(prices) == D("0.01")  # clamped at one tick, it never reaches zero
    assert max(prices) > D("0.05")  # and it comes back up


def test_random_walk_moves_even_when_volatility_is_below_a_tick() -> None:
    feed = walk(3, start="1.00", vol=0.0005, tick="0.01")
    prices = [feed.next_price() for _ in range(2000)]
    assert len(set(prices)) > 2


def test_random_walk_steps_start_with_the_start_price_at_once() -> None:
    steps = list(itertools.islice(walk(5, start="2000.004"), 3))
    assert steps[0] == FeedStep(0.0, D("2000.00"))
    assert [s.delay for s in steps[1:]] == [1.5, 1.5]
    assert steps[1:] == [
        FeedStep(1.5, p) for p in itertools.islice(_prices(walk(5, start="2000.004")), 2)
    ]


def _prices(feed: RandomWalkFeed) -> Iterator[Decimal]:
    while True:
        yield feed.next_price()


def test_random_walk_rejects_bad_parameters() -> None:
    for kwargs in (
        {"start": D(0)},
        {"volatility": -0.1},
        {"interval": 0.0},
        {"tick_size": D(0)},
    ):
        args = {
            "symbol": "ETH/USDT",
            "start": D(1),
            "volatility": 0.1,
            "interval": 1.0,
            "tick_size": D("0.01"),
        }
        args.update(kwargs)
        with pytest.raises(ValueError):
            RandomWalkFeed(**args)  # type: ignore[arg-type]


def test_round_to_tick() -> None:
    assert round_to_tick(D("2000.005"), D("0.01")) == D("2000.00")  # half to even
    assert round_to_tick(D("2000.015"), D("0.01")) == D("2000.02")
    assert round_to_tick(D("17"), D("5")) == D("15")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(text)
    return path


async def test_csv_replay_in_order_at_speed(tmp_path: Path, clock: FakeClock) -> None:
    path = write(tmp_path, "timestamp,price\n100,2000.004\n101,2001.5\n\n103,1999\n103,1998\n")
    feed = CsvReplayFeed("ETH/USDT", path, speed=2.0, tick_size=D("0.01"))
    assert len(feed) == 4
    sleep = FakeSleep(clock)
    ticks: list[Tick] = []
    start = clock.now
    await run_feed(feed, ticks.append, sleep=sleep, clock=clock)
    assert sleep.delays == [0.0, 0.5, 1.0, 0.0]
    assert [t.price for t in ticks] == [D("2000.00"), D("2001.50"), D("1999"), D("1998")]
    assert [t.ts - start for t in ticks] == [0.0, 0.5, 1.5, 1.5]
    assert all(t.symbol == "ETH/USDT" for t in ticks)


async def test_csv_replay_detects_millisecond_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "1700000000000,10\n1700000001500,11\n1700000001750,12\n")
    steps = list(CsvReplayFeed("ETH/USDT", path, speed=1.0, tick_size=D("0.01")))
    assert [s.delay for s in steps] == [0.0, 1.5, 0.25]


def test_csv_replay_loops_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path, "10,1\n12,2\n16,3\n")
    steps = list(itertools.islice(CsvReplayFeed("X", path, 1.0, D("0.01"), loop=True), 7))
    assert [s.price for s in steps] == [D(p) for p in "1231231"]
    assert [s.delay for s in steps] == [0.0, 2.0, 4.0, 3.0, 2.0, 4.0, 3.0]
    assert len(list(CsvReplayFeed("X", path, 1.0, D("0.01")))) == 3  # no loop: it stops
    with pytest.raises(StartupError, match="spanning no time"):
        CsvReplayFeed("X", write(tmp_path, "10,1\n"), 1.0, D("0.01"), loop=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ts,price\n1,10\nabc,11\n", "line 3: expected 'timestamp,price', got 'abc,11'"),
        ("1,10\n2,11,3\n", "line 2"),
        ("1,10\n2,\n", "line 2"),
        ("1,10\n2,nan\n", "line 2"),
        ("1,10\n2,-5\n", "line 2: price must be positive"),
        ("1,10\n2,0.001\n", "line 2: price must be positive"),  # rounds to 0
        ("5,10\n4,11\n", "line 2: timestamp goes backwards"),
        ("ts,price\n", "holds no prices"),
        ("", "holds no prices"),
    ],
)
def test_csv_replay_bad_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(StartupError, match=message) as info:
        CsvReplayFeed("ETH/USDT", path, speed=1.0, tick_size=D("0.01"))
    assert str(path) in str(info.value)


def test_csv_replay_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot be read"):
        CsvReplayFeed("ETH/USDT", tmp_path / "missing.csv", speed=1.0, tick_size=D("0.01"))
    with pytest.raises(ValueError, match="speed"):
        CsvReplayFeed("ETH/USDT", tmp_path / "missing.csv", speed=0, tick_size=D("0.01"))


def test_factories_build_feeds_for_a_market(tmp_path: Path) -> None:
    feed = random_walk(volatility=0.01, interval=2.0, seed=4)(ETH, D("1500"))
    assert feed.symbol == "ETH/USDT"
    steps = list(itertools.islice(feed, 2))
    assert steps[0] == FeedStep(0.0, D("1500"))
    assert steps[1].delay == 2.0
    path = write(tmp_path, "1,10\n2,11\n")
    replay = csv_replay(path, speed=4.0)(ETH, D("1500"))
    assert list(replay) == [FeedStep(0.0, D(10)), FeedStep(0.25, D(11))]


async def test_run_feed_ticks_after_each_sleep_until_interrupted(clock: FakeClock) -> None:
    ticks: list[Tick] = []
    calls = 0

    async def sleep(delay: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise _Stop

    with pytest.raises(_Stop):
        await run_feed(walk(2), ticks.append, sleep=sleep, clock=clock)
    assert len(ticks) == 3
    assert ticks[0].price == D("2000")


class _Stop(Exception):
    """Ends a feed loop from inside its sleep."""
