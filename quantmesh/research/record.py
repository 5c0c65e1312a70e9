"""What a backtest run needs and what it produced: the setup, the record, the curves."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from quantmesh.domain import Fill, MarketRules, Order
from quantmesh.grid.state import GridParams, GridSpec, RoundTrip

__all__ = ["Curve", "RunRecord", "SymbolSetup"]


@dataclass(frozen=True, slots=True)
class SymbolSetup:
    """What one symbol's backtest needs: its grid, the market's rules and the fee."""

    params: GridParams
    rules: MarketRules
    fee_rate: Decimal


@dataclass(slots=True)
class Curve:
    """Samples of the run at candle closes: time (epoch s), price, total PnL, inventory."""

    ts: list[float] = field(default_factory=list)
    price: list[float] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    inventory: list[float] = field(default_factory=list)


@dataclass(slots=True)
class RunRecord:
    """Everything a run produced, for the summary and the reports."""

    setup: SymbolSetup
    spec: GridSpec
    tag: str
    candles: int
    start: float  # epoch s of the first candle's open
    end: float  # epoch s of the last candle's close
    first_price: Decimal
    last_price: Decimal
    orders: list[Order]
    fills: list[Fill]
    round_trips: list[RoundTrip]
    skipped: Counter[str]
    rejected: int
    inventory: Decimal  # base held at the end (by the ledger: dust of closed trips excluded)
    inventory_cost: Decimal  # quote paid for it, fees included
    realized: Decimal
    curve: Curve
    max_drawdown: float  # largest fall of total PnL from a previous peak (quote)
    peak_inventory: float  # base
    peak_capital: float  # inventory cost + open buys, quote
    capped_candles: int  # candles that ended with a buy held back by max_position
    went_below: bool  # total PnL was below zero at some candle close
    recovered_at: float | None  # the close at which it was back at or above zero for good
    events: list[tuple[float, Decimal]] | None  # every event price, when traced
    source: str = "candles"  # or "trades" (then ``candles`` counts the trade prints)
    fill: str = "touch"  # the matching engine's fill rule, touch or through
