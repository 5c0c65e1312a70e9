"""Lock keys for order placement: per symbol, per level index, or per exact price.

The level key uses the level *index*, never a price in dollars, so two coins with very
different prices never share a key. The per-symbol part is in braces,
``{order:binance:ETHUSDT}:17``: a Redis Cluster hash tag, so every lock of a symbol and
the symbol's fence counter live in one slot and the lock script can touch both. The
metric label is always the per-symbol key without braces, which keeps label cardinality
bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from quantmesh.domain import compact_symbol

Granularity = Literal["symbol", "level", "exact"]


@dataclass(frozen=True, slots=True)
class LockKeys:
    exchange: str
    granularity: Granularity = "level"

    def label(self, symbol: str) -> str:
        """``order:binance:ETHUSDT``: the ``key`` label of the lock metrics."""
        return f"order:{self.exchange}:{compact_symbol(symbol)}"

    def order_key(self, symbol: str, level: int, price: Decimal) -> str:
        """``{order:binance:ETHUSDT}``, ``...}:17`` or ``...}:2001.5`` by granularity."""
        base = "{" + self.label(symbol) + "}"
        if self.granularity == "symbol":
            return base
        if self.granularity == "level":
            return f"{base}:{level}"
        return f"{base}:{price.normalize():f}"

    def owner_key(self, symbol: str) -> str:
        """``{order:binance:ETHUSDT}:owner``: the symbol's ownership lease; its fences come
        from the symbol's counter, above every earlier lease of the symbol."""
        return "{" + self.label(symbol) + "}:owner"

    def reconcile_key(self, symbol: str) -> str:
        """``{order:binance:ETHUSDT}:reconcile``: one reconciler per symbol at a time."""
        return "{" + self.label(symbol) + "}:reconcile"
