"""Small builders for the grid tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from quantmesh.domain import MarketRules
from quantmesh.grid.planner import OpenOrder, Plan
from quantmesh.grid.state import GridSpec, GridState, LevelState

D = Decimal
_ids = itertools.count(1)
ANCHOR = D("2000")


def make_rules(**overrides: Any) -> MarketRules:
    values: dict[str, Any] = {
        "symbol": "ETH/USDT",
        "base": "ETH",
        "quote": "USDT",
        "tick_size": D("0.01"),
        "lot_size": D("0.0001"),
        "min_amount": D("0.0001"),
        "min_notional": D("5"),
    }
    values.update(overrides)
    return MarketRules(**values)


def make_spec(**overrides: Any) -> GridSpec:
    """2000 anchor, 10 USDT steps, 30 USDT per level, windows of 3, hysteresis 2."""
    values: dict[str, Any] = {
        "symbol": "ETH/USDT",
        "anchor": D("2000"),
        "interval": D("10"),
        "order_quantity": D("30"),
        "buy_window": 3,
        "sell_window": 3,
    }
    values.update(overrides)
    return GridSpec(**values)


def make_state(levels: Iterable[LevelState] = (), anchor: Decimal = ANCHOR) -> GridState:
    state = GridState(symbol="ETH/USDT", anchor=anchor)
    for level in levels:
        state.set_level(level)
    return state


def held(index: int, holding: str = "0.015", cost: str = "30") -> LevelState:
    return LevelState(index, D(holding), D(cost), 1)


def as_open(result: Plan, prefix: str = "new") -> list[OpenOrder]:
    """The places of a plan as if the exchange had accepted them."""
    return [
        OpenOrder(f"{prefix}-{p.level}-{p.side}-{next(_ids)}", p.level, p.side, p.price, p.amount)
        for p in result.places
    ]


def apply(result: Plan, open_orders: Iterable[OpenOrder]) -> list[OpenOrder]:
    """Open orders after the plan's cancels and places went through."""
    cancelled = {c.client_order_id for c in result.cancels}
    kept = [o for o in open_orders if o.client_order_id not in cancelled]
    return kept + as_open(result)
