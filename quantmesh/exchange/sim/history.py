"""The simulator's price history as candles and public trades, pure.

Before the simulator started there is a seeded history of ``days`` of 1-minute candles
that ends at the market's start price (a geometric random walk drawn backwards from it);
from the start on, the candles are those of the prices the simulator actually published
(``record``). A minute without a price repeats the last close. Longer candles are made of
the minutes; ``klines`` follows Binance's ``GET /api/v3/klines`` selection rules.

Public trades of the seeded past are four prints per minute, along the candle's path
(open, the nearer extreme, the other extreme, close): what a backtest's path model assumes.
From the start on, every published price is one print (the latest ``LIVE_PRINTS`` are
kept), so a print never changes once served. Ids grow with time across both, as Binance's
``trades``/``aggTrades`` ids do.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

__all__ = ["MINUTE_MS", "Candle", "PriceHistory", "Print"]

MINUTE_MS = 60_000
DEFAULT_DAYS = 30
DEFAULT_VOLATILITY = 0.0008  # per minute, about 58 % a year
LIVE_PRINTS = 100_000  # prints of published prices kept (a day at 1.2 prices a second)


@dataclass(frozen=True, slots=True)
class Candle:
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int


@dataclass(frozen=True, slots=True)
class Print:
    """One public trade."""

    id: int
    time_ms: int
    price: Decimal
    qty: Decimal
    buyer_maker: bool


def _round(value: float, tick: Decimal, rounding: str) -> Decimal:
    return (Decimal(repr(value)) / tick).to_integral_value(rounding=rounding) * tick


class PriceHistory:
    """One market's minutes: the seeded past, then the recorded prices."""

    def __init__(
        self,
        start_price: Decimal,
        tick: Decimal,
        lot: Decimal,
        start_ms: int,
        *,
        days: int = DEFAULT_DAYS,
        seed: int | None = None,
        volatility: float = DEFAULT_VOLATILITY,
    ) -> None:
        self.tick = tick
        self.lot = lot
        self.start_minute = start_ms // MINUTE_MS
        self.first_minute = self.start_minute - days * 1440
        self._start_price = start_price
        self._seed = seed
        self._volatility = volatility
        self._past_cache: list[Candle] | None = None  # drawn at the first read (0.4 s a month)
        self._live: dict[int, list[Decimal]] = {}  # minute -> [open, high, low, close]
        self._counts: dict[int, int] = {}  # minute -> prices published in it
        self._last = max(_round(float(start_price), tick, ROUND_FLOOR), tick)
        self._prints: deque[Print] = deque(maxlen=LIVE_PRINTS)
        self._next_id = self.start_minute * 4  # above every id of the past

    @property
    def _past(self) -> list[Candle]:
        if self._past_cache is None:
            self._past_cache = self._draw()
        return self._past_cache

    def _draw(self) -> list[Candle]:
        tick, lot, volatility = self.tick, self.lot, self._volatility
        rng = random.Random(self._seed)
        past: list[Candle] = []
        close = float(self._start_price)
        for k in range(self.start_minute - 1, self.first_minute - 1, -1):
            open_ = close / math.exp(rng.gauss(0.0, volatility))
            reach = abs(rng.gauss(0.0, volatility)) * 0.5
            o = max(_round(open_, tick, ROUND_FLOOR), tick)
            c = max(_round(close, tick, ROUND_FLOOR), tick)
            high = _round(max(open_, close) * (1 + reach), tick, ROUND_CEILING)
            low = max(_round(min(open_, close) * (1 - reach), tick, ROUND_FLOOR), tick)
            volume = (Decimal(repr(rng.uniform(1, 50))) / lot).to_integral_value() * lot
            past.append(Candle(k * MINUTE_MS, o, max(high, o, c), min(low, o, c), c, volume, 4))
            close = open_
        past.reverse()
        return past

    def record(self, ts_ms: int, price: Decimal) -> Print:
        """A price the simulator published at ``ts_ms``; returns its print."""
        minute = max(ts_ms // MINUTE_MS, self.start_minute)
        bar = self._live.get(minute)
        if bar is None:
            self._live[minute] = [price, price, price, price]
        else:
            bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
        self._counts[minute] = self._counts.get(minute, 0) + 1
        previous = self._prints[-1] if self._prints else None
        time_ms = max(ts_ms, minute * MINUTE_MS, previous.time_ms if previous else 0)
        buyer_maker = previous is not None and price < previous.price
        printed = Print(self._next_id, time_ms, price, self.lot, buyer_maker)
        self._next_id += 1
        self._prints.append(printed)
        return printed

    def minute(self, minute: int, now_ms: int) -> Candle | None:
        """The candle of ``minute`` (None before the history or after ``now_ms``)."""
        if minute < self.first_minute or minute > now_ms // MINUTE_MS:
            return None
        if minute < self.start_minute:
            return self._past[minute - self.first_minute]
        bar = self._live.get(minute)
        if bar is None:
            previous = self._previous_close(minute)
            return Candle(minute * MINUTE_MS, previous, previous, previous, previous,
                          Decimal(0), 0)  # fmt: skip
        count = self._counts[minute]
        return Candle(minute * MINUTE_MS, bar[0], bar[1], bar[2], bar[3], self.lot * count, count)

    def _previous_close(self, minute: int) -> Decimal:
        earlier = [m for m in self._live if m < minute]
        if earlier:
            return self._live[max(earlier)][3]
        return self._past[-1].close if self._past else self._last

    def klines(
        self,
        interval_ms: int,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        now_ms: int,
    ) -> list[Candle]:
        """Binance's selection: from ``start_ms`` forward, else back from ``end_ms`` (else
        from now), at most ``limit`` candles, each opening inside ``[start, end]``."""
        first_open = self.first_minute * MINUTE_MS
        first = -(-first_open // interval_ms) * interval_ms  # the first whole candle
        last = now_ms // interval_ms * interval_ms
        if end_ms is not None:
            last = min(last, end_ms // interval_ms * interval_ms)
        if start_ms is not None:
            begin = max(first, -(-start_ms // interval_ms) * interval_ms)
            opens = range(begin, last + 1, interval_ms)[:limit]
        else:
            begin = max(first, last - (limit - 1) * interval_ms)
            opens = range(begin, last + 1, interval_ms)
        return [c for c in (self._candle(t, interval_ms, now_ms) for t in opens) if c]

    def _candle(self, open_ms: int, interval_ms: int, now_ms: int) -> Candle | None:
        minutes = [
            self.minute(m, now_ms)
            for m in range(open_ms // MINUTE_MS, (open_ms + interval_ms) // MINUTE_MS)
        ]
        bars = [bar for bar in minutes if bar is not None]
        if not bars:
            return None
        return Candle(
            open_ms,
            bars[0].open,
            max(b.high for b in bars),
            min(b.low for b in bars),
            bars[-1].close,
            sum((b.volume for b in bars), Decimal(0)),
            sum(b.trades for b in bars),
        )

    def prints(self, minute: int, now_ms: int) -> list[Print]:
        """The public trades of ``minute``: four along its path before the start, then the
        published prices (those still kept)."""
        if minute >= self.start_minute:
            return self._live_between(minute * MINUTE_MS, min(minute * MINUTE_MS + 59_999, now_ms))
        bar = self.minute(minute, now_ms)
        if bar is None or bar.trades == 0:
            return []
        high_first = bar.high - bar.open <= bar.open - bar.low
        path = [bar.open, *((bar.high, bar.low) if high_first else (bar.low, bar.high)), bar.close]
        qty = max((bar.volume / 4 / self.lot).to_integral_value(ROUND_FLOOR) * self.lot, self.lot)
        out = []
        previous = bar.open
        for j, price in enumerate(path):
            time_ms = min(minute * MINUTE_MS + j * 15_000, now_ms)
            out.append(Print(minute * 4 + j, time_ms, price, qty, price < previous))
            previous = price
        return out

    def _live_between(self, start_ms: int, end_ms: int) -> list[Print]:
        """Kept prints of published prices with ``start_ms <= time <= end_ms``."""
        times = [p.time_ms for p in self._prints]
        lo = bisect.bisect_left(times, start_ms)
        hi = bisect.bisect_right(times, end_ms)
        return [self._prints[i] for i in range(lo, hi)]

    def trades_between(self, start_ms: int, end_ms: int, limit: int, now_ms: int) -> list[Print]:
        """Prints with ``start_ms <= time <= end_ms``, oldest first, at most ``limit``."""
        out: list[Print] = []
        minute = max(start_ms // MINUTE_MS, self.first_minute)
        last_minute = min(min(end_ms, now_ms) // MINUTE_MS, self.start_minute - 1)
        while minute <= last_minute and len(out) < limit:
            out += [p for p in self.prints(minute, now_ms) if start_ms <= p.time_ms <= end_ms]
            minute += 1
        if len(out) < limit and end_ms >= self.start_minute * MINUTE_MS:
            out += self._live_between(start_ms, min(end_ms, now_ms))
        return out[:limit]

    def trades_from_id(self, from_id: int, limit: int, now_ms: int) -> list[Print]:
        """Prints with ``id >= from_id``, oldest first, at most ``limit``."""
        if from_id >= self.start_minute * 4:
            ids = [p.id for p in self._prints]
            first = bisect.bisect_left(ids, from_id)
            return [self._prints[i] for i in range(first, min(first + limit, len(ids)))]
        start = max(from_id // 4, self.first_minute) * MINUTE_MS
        found = self.trades_between(start, now_ms, limit + 4, now_ms)
        return [p for p in found if p.id >= from_id][:limit]

    def recent_trades(self, limit: int, now_ms: int) -> list[Print]:
        """The latest ``limit`` prints, oldest first (minutes without prices have none)."""
        found = [p for p in list(self._prints)[-limit:] if p.time_ms <= now_ms]
        minute = self.start_minute - 1
        while len(found) < limit and minute >= self.first_minute:
            found[:0] = self.prints(minute, now_ms)
            minute -= 1
        return found[-limit:]
