"""A liquidation: the held inventory sold at the market's price, nothing bought. Pure.

It runs on the grid's own accounting, so it never sells more than is held:

- every open buy is cancelled (``liquidate``); a level's sell comes after its buy closed,
  as in the grid, so partial fills of a cancelled buy are sold too;
- each level holding inventory (at least the market's minimum amount) gets one sell of
  its whole holding, floored to the lot, priced at ``price`` rounded down to the tick: at
  or below the price, so it fills against the bid at once or rests at the top of the
  book. The sell is the level's own (same level, side and cycle, hence the same client
  order id as the grid's sell would have), so fills close the level's round trip as any
  grid sell does, and an instance that takes the symbol over mid-liquidation adopts the
  open sells and sells only what the levels still hold;
- with ``reprice``, an open sell priced above that target (the price fell away from it)
  is cancelled; its level gets a new sell at the new price in a later step, once the
  cancel is confirmed. The caller decides how often that may happen;
- a level whose holding misses the market's minimums (dust; the grid's own
  ``min_order_value`` does not apply to a way out) is reported as skipped
  ``min_notional`` and left: no exchange would take it.

After ``market_after`` seconds, with ``allow_market``, the target goes ``market_slippage``
below the price (``Liquidation.target``): a sell that crosses the book at once as a market
order would, but never fills below that bound - an unbounded market order into a thin
book in a crash is what a way out must not do. The open sells above it are re-priced.

``done`` says the liquidation has nothing left to do: no open order and nothing sellable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Context, Decimal

from quantmesh.domain import MarketRules
from quantmesh.grid.levels import (
    inventory_threshold,
    meets_minimums,
    round_amount,
    round_buy_price,
)
from quantmesh.grid.planner import CancelOrder, OpenOrder, PlaceOrder, Plan, Skipped
from quantmesh.grid.state import GridState

__all__ = ["Liquidation", "done", "liquidation_plan"]

_NO_FLOOR = Decimal(0)  # the grid's ``min_order_value`` is for buying; a way out takes less
_EXACT = Context(prec=60)


@dataclass(frozen=True, slots=True)
class Liquidation:
    """How a symbol liquidates: seconds between re-pricings of its sells; with
    ``allow_market``, after ``market_after`` seconds, sells ``market_slippage`` (a fraction,
    0.01 = 1 %) below the price."""

    reprice_interval: float = 2.0
    allow_market: bool = False
    market_after: float = 60.0
    market_slippage: Decimal = Decimal("0.01")

    def target(self, price: Decimal, elapsed: float) -> Decimal:
        """The price a sell aims at ``elapsed`` seconds into the liquidation (before the
        tick rounding)."""
        if self.allow_market and elapsed >= self.market_after:
            return _EXACT.multiply(price, 1 - self.market_slippage)
        return price


def liquidation_plan(
    rules: MarketRules,
    state: GridState,
    price: Decimal,
    open_orders: Iterable[OpenOrder],
    *,
    reprice: bool,
) -> Plan:
    """Cancels of the open buys (and, with ``reprice``, of sells above the target), and a
    sell at the target for every held level without an open order."""
    if not price.is_finite() or not price > 0:
        raise ValueError(f"price must be positive and finite, got {price}")
    target = round_buy_price(price, rules)
    cancels: list[CancelOrder] = []
    occupied: set[int] = set()
    for order in open_orders:
        occupied.add(order.level)
        if order.side == "buy":
            cancels.append(CancelOrder(order.client_order_id, order.level, "buy", "liquidate"))
        elif reprice and order.price > target:
            cancels.append(
                CancelOrder(order.client_order_id, order.level, "sell", "liquidate_reprice")
            )
    places: list[PlaceOrder] = []
    skipped: list[Skipped] = []
    threshold = inventory_threshold(rules)
    for index in sorted(state.levels):
        level = state.levels[index]
        if level.holding < threshold or index in occupied:
            continue
        amount = round_amount(level.holding, rules)
        if target > 0 and meets_minimums(target, amount, rules, _NO_FLOOR):
            places.append(PlaceOrder(index, "sell", target, amount))
        else:
            skipped.append(Skipped(index, "sell", "min_notional"))
    return Plan(cancels=tuple(cancels), places=tuple(places), skipped=tuple(skipped))


def done(plan: Plan, open_orders: Iterable[OpenOrder]) -> bool:
    """Whether a liquidation whose step planned ``plan`` has finished: nothing open, nothing
    left to place (what remains, if anything, is dust no exchange takes)."""
    return not plan.places and not plan.cancels and not any(True for _ in open_orders)
