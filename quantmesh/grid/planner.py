"""The planner: (grid spec, market rules, grid state, price, open orders) -> actions.

Pure and deterministic; the trader turns a ``Plan`` into exchange calls and assigns client
order ids from (symbol, level, side, cycle). Spot, long-only. Output order: cancels
first, then places; each nearest to the price first.

Open orders are keyed by level:

- there is never a second order on a level that has an open order, of either side;
- a sell for the inventory of level ``i`` sits on level ``i`` and is priced one level up;
- a level "holds inventory" when a sell can carry it on its own: its holding floored to
  the lot is positive and at least the market's ``min_amount``
  (``levels.holds_inventory``). Smaller dust is not sellable and does not block a buy.

Buys: the ``buy_window`` levels strictly below the price, nearest first (``b0 =
level_below(p)``, ``b0 - 1``, ...). The buy price is the level price rounded down to the
tick, so it is always strictly below the price. A level is skipped when it holds
inventory or has an open order, and reported as ``Skipped``:

- ``out_of_range`` when its level price lies outside ``[lower_price, upper_price]`` or is
  not positive;
- ``below_tick`` when, far below a geometric anchor, its buy price would be the level
  above's;
- ``min_notional`` when the rounded order misses the market minimums or
  ``min_order_value``;
- ``position_cap`` when it would lift inventory value (level price x holding, dust
  included) + open buys (price x amount) + the buys placed so far in this plan above
  ``max_position``.

Sells: levels holding inventory are ranked by level (= sell price) ascending, so a sell
left below the price after a jump ranks first (it fills at once, which is fine for
long-only).

- Ranks are taken by levels with an open sell and by sells placed in this plan; levels
  whose sell misses the minimums (``Skipped min_notional``) and levels with an open buy
  (its partial fills created the holding; the sell comes after the buy closes) take no
  rank.
- A sell is placed for rank ``< sell_window``: price = next level's price rounded up to
  the tick, amount = holding floored to the lot.

Cancels, with hysteresis ``H = cancel_hysteresis``:

- an open buy ``d = b0 - level`` levels below ``b0`` is kept while ``d < buy_window + H``
  and cancelled (``outside_window``) from there on; an open buy at or above the price
  (``d < 0``) is filling and left alone;
- an open buy whose level is out of bounds is cancelled (``out_of_range``);
- an open sell of rank ``>= sell_window + H`` is cancelled (``outside_window``);
- open sells on levels that do not hold inventory are left alone (the dust remainder of a
  sell that closed its round trip; the exchange will finish it).

Inside the band nothing is placed and nothing is cancelled, so a price oscillating by up
to ``H`` levels does not churn orders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from quantmesh.domain import MarketRules, Side
from quantmesh.grid.levels import (
    amount_for_quote,
    in_bounds,
    inventory_threshold,
    level_below,
    level_price,
    meets_minimums,
    round_amount,
    round_buy_price,
    round_sell_price,
)
from quantmesh.grid.state import GridSpec, GridState

__all__ = ["CancelOrder", "OpenOrder", "PlaceOrder", "Plan", "SkipReason", "Skipped", "plan"]

SkipReason = Literal["min_notional", "position_cap", "out_of_range", "below_tick"]


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An order of this grid that is open on the exchange."""

    client_order_id: str
    level: int
    side: Side
    price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    level: int
    side: Side
    price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class CancelOrder:
    client_order_id: str
    level: int
    side: Side
    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A level that should have an order but does not, and why (counted by the trader)."""

    level: int
    side: Side
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class Plan:
    cancels: tuple[CancelOrder, ...]
    places: tuple[PlaceOrder, ...]
    skipped: tuple[Skipped, ...]


def plan(
    spec: GridSpec,
    rules: MarketRules,
    state: GridState,
    price: Decimal,
    open_orders: Iterable[OpenOrder],
) -> Plan:
    """The actions that move the open orders towards the desired grid at ``price``."""
    if not price.is_finite() or not price > 0:
        raise ValueError(f"price must be positive and finite, got {price}")
    occupied: set[int] = set()
    open_buys: list[OpenOrder] = []
    open_sells: dict[int, list[OpenOrder]] = {}
    for order in open_orders:
        occupied.add(order.level)
        if order.side == "buy":
            open_buys.append(order)
        else:
            open_sells.setdefault(order.level, []).append(order)

    cancels: list[tuple[Decimal, int, str, CancelOrder]] = []
    places: list[tuple[Decimal, int, str, PlaceOrder]] = []
    skipped: list[Skipped] = []
    threshold = inventory_threshold(rules)
    _plan_sells(
        spec, rules, state, threshold, price, occupied, open_sells, cancels, places, skipped
    )
    base = level_below(spec, price)
    _cancel_buys(spec, price, base, open_buys, cancels)
    _plan_buys(spec, rules, state, price, base, threshold, occupied, open_buys, places, skipped)

    cancels.sort(key=_sort_key)
    places.sort(key=_sort_key)
    return Plan(
        cancels=tuple(item[3] for item in cancels),
        places=tuple(item[3] for item in places),
        skipped=tuple(skipped),
    )


def _sort_key(item: tuple[Decimal, int, str, object]) -> tuple[Decimal, int, str]:
    return item[0], item[1], item[2]


def _plan_sells(
    spec: GridSpec,
    rules: MarketRules,
    state: GridState,
    threshold: Decimal,
    price: Decimal,
    occupied: set[int],
    open_sells: dict[int, list[OpenOrder]],
    cancels: list[tuple[Decimal, int, str, CancelOrder]],
    places: list[tuple[Decimal, int, str, PlaceOrder]],
    skipped: list[Skipped],
) -> None:
    window = spec.sell_window
    cancel_from = window + spec.cancel_hysteresis
    levels = state.levels
    rank = 0
    last: int | None = None  # the highest level visited
    for index in state.holding_indices():
        if rank >= window:
            break
        last = index
        level = levels[index]
        if level.holding < threshold:
            continue
        sells = open_sells.get(index)
        if sells is not None:
            if rank >= cancel_from:
                _cancel_sells(index, sells, price, cancels)
            rank += 1
        elif index in occupied:
            continue
        else:
            sell_price = round_sell_price(level_price(spec, index + 1), rules)
            amount = round_amount(level.holding, rules)
            if meets_minimums(sell_price, amount, rules, spec.min_order_value):
                place = PlaceOrder(index, "sell", sell_price, amount)
                places.append((abs(sell_price - price), index, "sell", place))
                rank += 1
            else:
                skipped.append(Skipped(index, "sell", "min_notional"))
    if rank < window:
        return
    # Past the window nothing is placed or skipped: only the held levels above with an open
    # sell take a rank (and are cancelled from cancel_from on), so only they are visited.
    for index in sorted(open_sells):
        above = levels.get(index)
        if (last is None or index > last) and above is not None and above.holding >= threshold:
            if rank >= cancel_from:
                _cancel_sells(index, open_sells[index], price, cancels)
            rank += 1


def _cancel_sells(
    index: int,
    sells: list[OpenOrder],
    price: Decimal,
    cancels: list[tuple[Decimal, int, str, CancelOrder]],
) -> None:
    for order in sells:
        cancel = CancelOrder(order.client_order_id, index, "sell", "outside_window")
        cancels.append((abs(order.price - price), index, "sell", cancel))


def _cancel_buys(
    spec: GridSpec,
    price: Decimal,
    base: int,
    open_buys: list[OpenOrder],
    cancels: list[tuple[Decimal, int, str, CancelOrder]],
) -> None:
    cancel_from = spec.buy_window + spec.cancel_hysteresis
    bounded = spec.lower_price is not None or spec.upper_price is not None
    for order in open_buys:
        distance = base - order.level
        if distance < 0:
            continue  # at or above the price: it is filling
        if distance >= cancel_from:
            reason = "outside_window"
        elif bounded and not _in_bounds(spec, level_price(spec, order.level)):
            reason = "out_of_range"
        else:
            continue
        cancel = CancelOrder(order.client_order_id, order.level, "buy", reason)
        cancels.append((abs(order.price - price), order.level, "buy", cancel))


def _in_bounds(spec: GridSpec, level: Decimal) -> bool:
    return level > 0 and in_bounds(spec, level)


def _exposure(spec: GridSpec, state: GridState, open_buys: list[OpenOrder]) -> Decimal:
    """Inventory at level prices plus open buys at their prices (quote currency)."""
    total = Decimal(0)
    for level in state.levels.values():
        if level.holding > 0:
            total += level_price(spec, level.index) * level.holding
    for order in open_buys:
        total += order.price * order.amount
    return total


def _plan_buys(
    spec: GridSpec,
    rules: MarketRules,
    state: GridState,
    price: Decimal,
    base: int,
    threshold: Decimal,
    occupied: set[int],
    open_buys: list[OpenOrder],
    places: list[tuple[Decimal, int, str, PlaceOrder]],
    skipped: list[Skipped],
) -> None:
    cap = spec.max_position
    exposure: Decimal | None = None  # computed on first need: most ticks place nothing
    levels = state.levels
    for index in range(base, base - spec.buy_window, -1):
        if index in occupied:
            continue
        level_state = levels.get(index)
        if level_state is not None and level_state.holding >= threshold:
            continue  # holds inventory: its sell covers this level
        level = level_price(spec, index)
        buy_price = round_buy_price(level, rules)
        if not (_in_bounds(spec, level) and 0 < buy_price < price):
            skipped.append(Skipped(index, "buy", "out_of_range"))
            continue
        if round_buy_price(level_price(spec, index + 1), rules) <= buy_price:
            # Far below a geometric anchor levels come closer than a tick: this one would
            # share its price with the level above, so it is not traded.
            skipped.append(Skipped(index, "buy", "below_tick"))
            continue
        amount = amount_for_quote(spec.order_quantity, buy_price, rules)
        if not meets_minimums(buy_price, amount, rules, spec.min_order_value):
            skipped.append(Skipped(index, "buy", "min_notional"))
            continue
        if cap is not None:
            if exposure is None:
                exposure = _exposure(spec, state, open_buys)
            value = buy_price * amount
            if exposure + value > cap:
                skipped.append(Skipped(index, "buy", "position_cap"))
                continue
            exposure += value
        places.append(
            (price - buy_price, index, "buy", PlaceOrder(index, "buy", buy_price, amount))
        )
