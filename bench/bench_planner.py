"""Planner speed, side by side with an empty call taking the same arguments.

A steady grid: windows of 20 levels, 20 levels holding inventory with open sells, 20 open
buys below, and prices wandering across a few levels around the anchor (so most ticks plan
nothing and some place a buy or two). Numbers are microseconds per call in this run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from decimal import Decimal

from quantmesh.domain import MarketRules
from quantmesh.grid.planner import OpenOrder, plan
from quantmesh.grid.state import GridSpec, GridState, LevelState

__all__ = ["measure_planner"]

_Args = tuple[GridSpec, MarketRules, GridState, list[OpenOrder]]
_Call = Callable[[GridSpec, MarketRules, GridState, Decimal, Iterable[OpenOrder]], object]


def _scenario() -> _Args:
    spec = GridSpec(
        symbol="ETH/USDT",
        anchor=Decimal(2000),
        interval=Decimal(5),
        order_quantity=Decimal(30),
        buy_window=20,
        sell_window=20,
        min_order_value=Decimal(10),
        max_position=Decimal(100000),
    )
    rules = MarketRules(
        symbol="ETH/USDT",
        base="ETH",
        quote="USDT",
        tick_size=Decimal("0.01"),
        lot_size=Decimal("0.0001"),
        min_amount=Decimal("0.0001"),
        min_notional=Decimal(5),
    )
    state = GridState(symbol="ETH/USDT", anchor=spec.anchor)
    orders: list[OpenOrder] = []
    for i in range(1, 21):
        state.set_level(LevelState(i, Decimal("0.0149"), Decimal("29.95"), 1))
        price = spec.anchor + (i + 1) * spec.interval
        orders.append(OpenOrder(f"s{i}", i, "sell", price, Decimal("0.0149")))
    for i in range(-20, 0):
        price = spec.anchor + i * spec.interval
        orders.append(OpenOrder(f"b{i}", i, "buy", price, Decimal("0.0151")))
    return spec, rules, state, orders


def _noop(
    spec: GridSpec,
    rules: MarketRules,
    state: GridState,
    price: Decimal,
    open_orders: Iterable[OpenOrder],
) -> None:
    return None


def _time_calls(call: _Call, args: _Args, prices: list[Decimal]) -> float:
    spec, rules, state, orders = args
    start = time.perf_counter()
    for price in prices:
        call(spec, rules, state, price, orders)
    return time.perf_counter() - start


def measure_planner(n_ticks: int = 20000, rounds: int = 3) -> dict[str, float]:
    """Time ``plan`` and an empty call over the same ``n_ticks`` prices, in microseconds.

    Rounds of the two alternate and the fastest round of each is kept.
    """
    if n_ticks < 1 or rounds < 1:
        raise ValueError("n_ticks and rounds must be at least 1")
    args = _scenario()
    rng = random.Random(7)
    prices = [Decimal(rng.randrange(199000, 201500)) / 100 for _ in range(n_ticks)]
    _time_calls(plan, args, prices[:200])  # warm up
    planner = baseline = math.inf
    for _ in range(rounds):
        planner = min(planner, _time_calls(plan, args, prices))
        baseline = min(baseline, _time_calls(_noop, args, prices))
    return {
        "planner_us_per_tick": planner / n_ticks * 1e6,
        "baseline_us_per_call": baseline / n_ticks * 1e6,
    }


if __name__ == "__main__":
    print(measure_planner())
