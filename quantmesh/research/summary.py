"""The figures of one backtest run: what people compare grids by.

- ``round_trips``; ``realized_pnl`` (sum of round trips, net of fees); ``unrealized_pnl``
  (inventory at the last price minus what it cost, fees included); ``total_pnl``;
  ``fees`` (every fill's, quote currency).
- ``committed_capital``: the peak capital used - the most quote the grid had in inventory
  (at cost) plus in open buys at one time: what it took to run this grid.
- ``return_pct``: ``total_pnl / committed_capital``; ``buy_and_hold_pct``: the same capital
  in the base currency from the first price to the last.
- ``max_drawdown``: the largest fall of total PnL (marked at candle closes) from an
  earlier peak, in quote and as a share of the committed capital.
- ``peak_inventory``: the most base currency held; ``time_at_max_position_pct``: share of
  candles that ended with a buy held back by ``max_position``.
- ``days_to_break_even``: days from the start until total PnL was back at or above zero
  for good (0 when it never went below; ``None`` when it ends below).

Money is exact (``Decimal`` as text) where the ledger is exact; curve figures are floats.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from quantmesh.research.engine import RunRecord

__all__ = ["Summary", "summarize"]

_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures of one symbol's run (see the module docstring)."""

    symbol: str
    start: float
    end: float
    candles: int
    orders: int
    fills: int
    round_trips: int
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    total_pnl: Decimal
    fees: Decimal
    committed_capital: float
    return_pct: float | None
    buy_and_hold_pct: float
    max_drawdown: float
    max_drawdown_pct: float | None
    peak_inventory: float
    inventory: Decimal
    time_at_max_position_pct: float | None
    days_to_break_even: float | None
    skipped: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: decimals as text, floats rounded to fixed digits."""
        return {
            "symbol": self.symbol,
            "start": self.start,
            "end": self.end,
            "candles": self.candles,
            "orders": self.orders,
            "fills": self.fills,
            "round_trips": self.round_trips,
            "realized_pnl": _text(self.realized_pnl),
            "unrealized_pnl": _text(self.unrealized_pnl),
            "total_pnl": _text(self.total_pnl),
            "fees": _text(self.fees),
            "committed_capital": _round(self.committed_capital),
            "return_pct": _round(self.return_pct),
            "buy_and_hold_pct": _round(self.buy_and_hold_pct),
            "max_drawdown": _round(self.max_drawdown),
            "max_drawdown_pct": _round(self.max_drawdown_pct),
            "peak_inventory": _round(self.peak_inventory),
            "inventory": _text(self.inventory),
            "time_at_max_position_pct": _round(self.time_at_max_position_pct),
            "days_to_break_even": _round(self.days_to_break_even),
            "skipped": dict(sorted(self.skipped.items())),
        }


def _text(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def summarize(record: RunRecord) -> Summary:
    """The figures of ``record``."""
    fees = sum((fill.fee for fill in record.fills), Decimal(0))
    unrealized = record.inventory * record.last_price - record.inventory_cost
    total = record.realized + unrealized
    committed = record.peak_capital
    first, last = record.first_price, record.last_price
    hold = float((last - first) / first) * 100 if first > 0 else 0.0
    break_even: float | None = 0.0
    if record.recovered_at is not None:
        break_even = (record.recovered_at - record.start) / _DAY
    elif record.went_below:
        break_even = None  # still below at the end
    capped = None
    if record.spec.max_position is not None:
        capped = record.capped_candles / record.candles * 100
    return Summary(
        symbol=record.spec.symbol,
        start=record.start,
        end=record.end,
        candles=record.candles,
        orders=len(record.orders),
        fills=len(record.fills),
        round_trips=len(record.round_trips),
        realized_pnl=record.realized,
        unrealized_pnl=unrealized,
        total_pnl=total,
        fees=fees,
        committed_capital=committed,
        return_pct=float(total) / committed * 100 if committed > 0 else None,
        buy_and_hold_pct=hold,
        max_drawdown=record.max_drawdown,
        max_drawdown_pct=record.max_drawdown / committed * 100 if committed > 0 else None,
        peak_inventory=record.peak_inventory,
        inventory=record.inventory,
        time_at_max_position_pct=capped,
        days_to_break_even=break_even,
        skipped=dict(Counter(record.skipped)),
    )
