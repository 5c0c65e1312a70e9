"""Level maths: where each grid level sits, and rounding to what the market accepts.

Arithmetic spacing: ``level_price(i) = anchor + i * interval``, exact in ``Decimal``.
Geometric spacing: ``level_price(i) = anchor * (1 + interval) ** i``, computed with a fixed
28-digit context (independent of the caller's decimal context) and rounded to
``GEOMETRIC_DIGITS`` significant digits, so the same spec always yields the same prices.
Indices may be negative (levels below the anchor).

``level_below`` is exact with respect to ``level_price``: it returns the highest index whose
price is strictly below the given price, checked against ``level_price`` itself.

The rounding helpers return values carrying the exponent of the tick or lot (``2000.00`` for a
``0.01`` tick), so they print the same way whatever the input looked like.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal

from quantmesh.domain import MarketRules, ceil_to
from quantmesh.grid.state import GridSpec

__all__ = [
    "GEOMETRIC_DIGITS",
    "amount_for_quote",
    "holds_inventory",
    "in_bounds",
    "inventory_threshold",
    "level_below",
    "level_price",
    "meets_minimums",
    "round_amount",
    "round_buy_price",
    "round_sell_price",
]

GEOMETRIC_DIGITS = 16
"""Significant digits kept in a geometric level price (far finer than any tick)."""

_CALC = Context(prec=28, rounding=ROUND_HALF_EVEN)
_OUT = Context(prec=GEOMETRIC_DIGITS, rounding=ROUND_HALF_EVEN)
_ONE = Decimal(1)


def _check_interval(spec: GridSpec) -> None:
    if not spec.interval > 0:
        raise ValueError(f"grid interval must be positive, got {spec.interval}")
    if spec.spacing == "geometric" and not spec.anchor > 0:
        raise ValueError(f"geometric grid needs a positive anchor, got {spec.anchor}")


def level_price(spec: GridSpec, index: int) -> Decimal:
    """The price of level ``index`` (may be zero or negative far below an arithmetic anchor)."""
    if spec.spacing == "arithmetic":
        return spec.anchor + index * spec.interval
    _check_interval(spec)
    factor = _CALC.power(_ONE + spec.interval, index)
    return _OUT.plus(_CALC.multiply(spec.anchor, factor))


def level_below(spec: GridSpec, price: Decimal) -> int:
    """The highest index whose level price is strictly below ``price``."""
    _check_interval(spec)
    if not price.is_finite():
        raise ValueError(f"price must be finite, got {price}")
    if spec.spacing == "arithmetic":
        # level_price(i) < price  <=>  i < (price - anchor) / interval
        quotient = (price - spec.anchor) / spec.interval
        index = int(quotient.to_integral_value(rounding=ROUND_CEILING)) - 1
    else:
        if not price > 0:
            raise ValueError(f"geometric grid needs a positive price, got {price}")
        estimate = (math.log(price) - math.log(spec.anchor)) / math.log1p(spec.interval)
        if not math.isfinite(estimate):
            raise ValueError(f"price {price} is out of range for this grid")
        index = math.floor(estimate)
    # The estimate can be off by one (rounded division, float logarithms): settle it exactly.
    while level_price(spec, index + 1) < price:
        index += 1
    while level_price(spec, index) >= price:
        index -= 1
    return index


def in_bounds(spec: GridSpec, price: Decimal) -> bool:
    """Whether ``price`` lies within ``[lower_price, upper_price]`` (each bound optional)."""
    if spec.lower_price is not None and price < spec.lower_price:
        return False
    return spec.upper_price is None or price <= spec.upper_price


def round_buy_price(price: Decimal, rules: MarketRules) -> Decimal:
    """Round a buy price down to the tick (never pay more than the level)."""
    tick = rules.tick_size
    return ((price / tick).to_integral_value(rounding=ROUND_FLOOR) * tick).quantize(tick)


def round_sell_price(price: Decimal, rules: MarketRules) -> Decimal:
    """Round a sell price up to the tick (never sell for less than the level)."""
    tick = rules.tick_size
    return ((price / tick).to_integral_value(rounding=ROUND_CEILING) * tick).quantize(tick)


def amount_for_quote(quote: Decimal, price: Decimal, rules: MarketRules) -> Decimal:
    """The largest lot multiple whose cost at ``price`` does not exceed ``quote``."""
    if not price > 0:
        raise ValueError(f"price must be positive, got {price}")
    lot = rules.lot_size
    amount = (quote / price / lot).to_integral_value(rounding=ROUND_FLOOR) * lot
    # The division is rounded to the context precision; never exceed the budget because of it.
    if amount > 0 and amount * price > quote:
        amount -= lot
    return amount.quantize(lot)


def round_amount(amount: Decimal, rules: MarketRules) -> Decimal:
    """Round an amount down to the lot."""
    lot = rules.lot_size
    return ((amount / lot).to_integral_value(rounding=ROUND_FLOOR) * lot).quantize(lot)


def meets_minimums(
    price: Decimal, amount: Decimal, rules: MarketRules, min_order_value: Decimal
) -> bool:
    """Whether the exchange (and our own ``min_order_value``) would accept this order."""
    if not amount > 0 or amount < rules.min_amount:
        return False
    return price * amount >= max(rules.min_notional, min_order_value)


def inventory_threshold(rules: MarketRules) -> Decimal:
    """The smallest holding a sell order can carry on its own.

    A holding ``h`` is sellable when ``floor_to(h, lot)`` is positive and at least
    ``min_amount``, which is the same as ``h >= max(lot, ceil_to(min_amount, lot))``.
    """
    return max(rules.lot_size, ceil_to(rules.min_amount, rules.lot_size))


def holds_inventory(holding: Decimal, rules: MarketRules) -> bool:
    """Whether a level's holding counts as inventory; smaller dust is not sellable."""
    return holding >= inventory_threshold(rules)
