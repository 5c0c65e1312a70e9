"""Price feeds for the simulated exchange: a random walk and a CSV replay.

A feed is a plain iterator of ``FeedStep`` (wait this long, then the price is this), so it
is pure and testable without a loop; ``run_feed`` drives one with an injectable sleep.
Feeds know nothing about the exchange adapter, so the HTTP simulator can reuse them.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol

from quantmesh.domain import MarketRules, Tick
from quantmesh.errors import StartupError

MS_THRESHOLD = 1e11  # timestamps above this are milliseconds (1e11 s is the year 5138)


@dataclass(frozen=True, slots=True)
class FeedStep:
    """Wait ``delay`` seconds, then the price is ``price``."""

    delay: float
    price: Decimal


class PriceFeed(Protocol):
    """Prices of one symbol, as an iterator of steps; it ends when the feed is exhausted."""

    @property
    def symbol(self) -> str: ...

    def __iter__(self) -> Iterator[FeedStep]: ...


# Builds the feed of a market from its rules and the price to resume from (the last known).
FeedFactory = Callable[[MarketRules, Decimal], PriceFeed]


def round_to_tick(price: Decimal, tick_size: Decimal) -> Decimal:
    """The nearest multiple of ``tick_size`` (half to even)."""
    return (price / tick_size).to_integral_value(rounding=ROUND_HALF_EVEN) * tick_size


class RandomWalkFeed:
    """A geometric random walk: each step multiplies the price by ``exp(N(0, volatility))``.

    Published prices are rounded to the tick and never below one tick; the walk itself keeps
    full precision, so a volatility smaller than a tick still moves the price over time.
    The first step is the start price, immediately.
    """

    def __init__(
        self,
        symbol: str,
        start: Decimal,
        volatility: float,
        interval: float,
        tick_size: Decimal,
        seed: int | None = None,
    ) -> None:
        if not start > 0:
            raise ValueError(f"start price must be positive, got {start}")
        if not volatility >= 0 or not math.isfinite(volatility):
            raise ValueError(f"volatility must be a finite number >= 0, got {volatility}")
        if not interval > 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be a finite number > 0, got {interval}")
        if not tick_size > 0:
            raise ValueError(f"tick size must be positive, got {tick_size}")
        self._symbol = symbol
        self._start = start
        self._value = float(start)
        self._floor = float(tick_size)
        self._volatility = volatility
        self.interval = interval
        self._tick_size = tick_size
        self._rng = random.Random(seed)

    @property
    def symbol(self) -> str:
        return self._symbol

    def next_price(self) -> Decimal:
        """Advance the walk by one step and return the new price."""
        step = math.exp(self._rng.gauss(0.0, self._volatility))
        self._value = max(self._value * step, self._floor)  # the walk never reaches zero
        return max(round_to_tick(Decimal(self._value), self._tick_size), self._tick_size)

    def __iter__(self) -> Iterator[FeedStep]:
        yield FeedStep(0.0, max(round_to_tick(self._start, self._tick_size), self._tick_size))
        while True:
            yield FeedStep(self.interval, self.next_price())


class CsvReplayFeed:
    """Replays ``timestamp,price`` rows; the gap between timestamps divided by ``speed``
    is the delay. Timestamps are seconds, or milliseconds when above 1e11. A non-numeric
    first line is a header. At the end it stops, or starts over when ``loop`` is set.

    The whole file is read and checked at construction, so a bad file fails at startup.
    """

    def __init__(
        self,
        symbol: str,
        path: Path | str,
        speed: float,
        tick_size: Decimal,
        loop: bool = False,
    ) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a finite number > 0, got {speed}")
        self._symbol = symbol
        self._path = Path(path)
        self._speed = speed
        self._loop = loop
        self._rows = _read_csv(self._path, tick_size)
        span = self._rows[-1][0] - self._rows[0][0]
        if loop and span <= 0:
            raise StartupError(f"price file {self._path}: cannot loop over rows spanning no time")
        # Wrapping around waits one average gap, so a loop keeps the file's pace.
        self._wrap_delay = span / (len(self._rows) - 1) / speed if loop else 0.0

    @property
    def symbol(self) -> str:
        return self._symbol

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[FeedStep]:
        first = True
        while True:
            previous: float | None = None
            for ts, price in self._rows:
                if previous is not None:
                    delay = (ts - previous) / self._speed
                else:
                    delay = 0.0 if first else self._wrap_delay
                previous = ts
                yield FeedStep(delay, price)
            first = False
            if not self._loop:
                return


def _read_csv(path: Path, tick_size: Decimal) -> list[tuple[float, Decimal]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"price file {path} cannot be read: {exc}") from exc
    rows: list[tuple[float, Decimal]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        parsed = _parse_row(fields)
        if parsed is None:
            if lineno == 1:  # a header
                continue
            raise StartupError(
                f"price file {path}, line {lineno}: expected 'timestamp,price', got {line!r}"
            )
        ts, price = parsed
        price = round_to_tick(price, tick_size)
        if price <= 0:
            raise StartupError(f"price file {path}, line {lineno}: price must be positive")
        if rows and ts < rows[-1][0]:
            raise StartupError(f"price file {path}, line {lineno}: timestamp goes backwards")
        rows.append((ts, price))
    if not rows:
        raise StartupError(f"price file {path} holds no prices")
    return rows


def _parse_row(fields: list[str]) -> tuple[float, Decimal] | None:
    if len(fields) != 2:
        return None
    try:
        ts = float(fields[0])
        price = Decimal(fields[1])
    except (ValueError, InvalidOperation):
        return None
    if not math.isfinite(ts) or not price.is_finite():
        return None
    return (ts / 1000 if ts > MS_THRESHOLD else ts), price


def random_walk(volatility: float, interval: float, seed: int | None = None) -> FeedFactory:
    """A factory of ``RandomWalkFeed`` for a market, starting at the given price."""

    def build(rules: MarketRules, start_price: Decimal) -> PriceFeed:
        return RandomWalkFeed(
            rules.symbol, start_price, volatility, interval, rules.tick_size, seed
        )

    return build


def csv_replay(path: Path | str, speed: float = 1.0, loop: bool = False) -> FeedFactory:
    """A factory of ``CsvReplayFeed``; a replay starts at the file's first row."""

    def build(rules: MarketRules, start_price: Decimal) -> PriceFeed:
        return CsvReplayFeed(rules.symbol, path, speed, rules.tick_size, loop)

    return build


async def run_feed(
    feed: PriceFeed,
    on_tick: Callable[[Tick], None],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
) -> None:
    """Drive ``feed``: sleep each step's delay, then hand a ``Tick`` to ``on_tick``.

    Returns when the feed ends; cancel the task to stop it earlier.
    """
    symbol = feed.symbol
    for step in feed:
        await sleep(step.delay)
        on_tick(Tick(symbol, step.price, clock()))
