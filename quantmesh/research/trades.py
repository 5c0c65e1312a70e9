"""Public trades (an exchange's prints) as columns; pure.

Times are epoch milliseconds (UTC), ids the exchange's own (text: ccxt gives them so),
prices and amounts floats as the exchange published them, ``side`` the taker's side
(``buy``, ``sell``, or empty when the exchange does not say). Kept in time order and, within
one millisecond, in the exchange's order (numeric ids ascending).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TRADES", "Trades"]

TRADES = "trades"
"""What stands for the timeframe where trades are meant (file names, ``data list``)."""


def _order(ts: int, trade_id: str) -> tuple[int, int, str]:
    return ts, len(trade_id), trade_id  # numeric ids ascending, others by their text


@dataclass(slots=True)
class Trades:
    """Trades in time order, one list per column (all of the same length)."""

    ts: list[int] = field(default_factory=list)
    id: list[str] = field(default_factory=list)
    price: list[float] = field(default_factory=list)
    amount: list[float] = field(default_factory=list)
    side: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def append(self, trade: Mapping[str, Any]) -> None:
        """Add one of ccxt's ``fetch_trades`` structures."""
        self.ts.append(int(trade["timestamp"]))
        self.id.append(str(trade["id"]))
        self.price.append(float(trade["price"]))
        self.amount.append(float(trade["amount"]))
        self.side.append(str(trade.get("side") or ""))

    def window(self, start_ms: int | None, end_ms: int | None) -> Trades:
        """The trades of ``[start_ms, end_ms)`` (``None``: unbounded)."""
        lo = 0 if start_ms is None else bisect_left(self.ts, start_ms)
        hi = len(self.ts) if end_ms is None else bisect_left(self.ts, end_ms)
        return Trades(
            self.ts[lo:hi], self.id[lo:hi], self.price[lo:hi], self.amount[lo:hi], self.side[lo:hi]
        )

    def merged(self, other: Trades) -> Trades:
        """Both sets in order, each trade (by id) once; where both hold it, ``other``'s wins."""
        rows: dict[str, tuple[int, float, float, str]] = {}
        for source in (self, other):
            for i, trade_id in enumerate(source.id):
                rows[trade_id] = (source.ts[i], source.price[i], source.amount[i], source.side[i])
        out = Trades()
        for trade_id in sorted(rows, key=lambda t: _order(rows[t][0], t)):
            ts, price, amount, side = rows[trade_id]
            out.ts.append(ts)
            out.id.append(trade_id)
            out.price.append(price)
            out.amount.append(amount)
            out.side.append(side)
        return out
