"""OHLCV candles as columns, timeframes and gaps; pure.

Times are epoch milliseconds (UTC) of each candle's open, as exchanges and ccxt give
them; prices are floats as the exchange published them (the backtest rounds them to the
market's tick).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise

from quantmesh.research.errors import ResearchError

__all__ = ["TIMEFRAMES", "Candles", "find_gaps", "parse_day", "timeframe_ms"]

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
"""The fixed-length timeframes Binance serves (``1M`` has no fixed length: not supported)."""


def timeframe_ms(timeframe: str) -> int:
    """The length of one candle of ``timeframe`` (``1m``, ``4h``, ``1d`` ...) in ms."""
    match = re.fullmatch(r"(\d+)([mhdw])", timeframe)
    if match is None or timeframe not in TIMEFRAMES:
        raise ResearchError(
            f"timeframe {timeframe!r} is not supported; use one of {', '.join(TIMEFRAMES)}"
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_day(text: str, flag: str) -> int:
    """``2025-01-01`` or ``2025-01-01T12:00`` (UTC) -> epoch ms; ``flag`` names the option."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ResearchError(
            f"{flag} {text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(slots=True)
class Candles:
    """Candles in time order, one list per column (all of the same length)."""

    ts: list[int] = field(default_factory=list)
    open: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def append(self, row: list[float] | tuple[float, ...]) -> None:
        """Add one ``[ts, open, high, low, close, volume]`` row (ccxt's ``fetch_ohlcv``)."""
        self.ts.append(int(row[0]))
        self.open.append(float(row[1]))
        self.high.append(float(row[2]))
        self.low.append(float(row[3]))
        self.close.append(float(row[4]))
        self.volume.append(float(row[5]) if len(row) > 5 and row[5] is not None else 0.0)

    def window(self, start_ms: int | None, end_ms: int | None) -> Candles:
        """The candles opening in ``[start_ms, end_ms)`` (``None``: unbounded)."""
        from bisect import bisect_left

        lo = 0 if start_ms is None else bisect_left(self.ts, start_ms)
        hi = len(self.ts) if end_ms is None else bisect_left(self.ts, end_ms)
        return Candles(
            self.ts[lo:hi],
            self.open[lo:hi],
            self.high[lo:hi],
            self.low[lo:hi],
            self.close[lo:hi],
            self.volume[lo:hi],
        )

    def merged(self, other: Candles) -> Candles:
        """Both sets in time order; where both hold a candle, ``other``'s wins."""
        rows = {t: i for i, t in enumerate(self.ts)}
        by_ts: dict[int, tuple[float, float, float, float, float]] = {
            t: (self.open[i], self.high[i], self.low[i], self.close[i], self.volume[i])
            for t, i in rows.items()
        }
        for i, t in enumerate(other.ts):
            by_ts[t] = (other.open[i], other.high[i], other.low[i], other.close[i], other.volume[i])
        out = Candles()
        for t in sorted(by_ts):
            out.append((t, *by_ts[t]))
        return out


def find_gaps(ts: list[int], step_ms: int) -> list[tuple[int, int]]:
    """Missing candles inside ``ts`` as ``(first missing open, last missing open)`` pairs."""
    gaps: list[tuple[int, int]] = []
    for before, after in pairwise(ts):
        if after - before > step_ms:
            gaps.append((before + step_ms, after - step_ms))
    return gaps
