"""Per-level accounting: fills applied to a level's holding and cost, round trips closed.

The trader applies it as order updates arrive. Pure and exact: all arithmetic runs in a
private 60-digit decimal context, so sums and products of prices and amounts are exact
whatever the caller's context is.

Buy side:

- ``apply_buy_fill`` adds each fill to the level: ``holding += amount`` (minus the fee
  when it is charged in the base currency), ``cost += price * amount`` (plus the fee when
  it is charged in the quote currency; a fee in a third currency, e.g. BNB, is not part
  of the cost).
- ``close_buy`` is applied once when the buy order closes (filled, or cancelled with
  some fill) and bumps the cycle when the level holds something.

Sell side: a sell may fill in several parts, and a partly filled sell may be cancelled
and replaced by another sell for the rest.

- The level's ``cost`` is left untouched while the position is being sold: it stays the
  quote paid for the whole position until the round trip closes, so the round trip's
  ``buy_cost`` is exactly what was paid, with no proportional division and no rounding.
- What has been sold so far lives in a small ``SellProgress`` (base amount sold, quote
  received net of quote fees) that the trader keeps per (level, cycle) - not per order,
  so a replacement sell continues the same round trip. It is a plain sum over the sell
  fills of that level and cycle, so after a restart the trader can rebuild it from the
  stored fills.
- ``apply_sell_fill`` takes the fill off the holding (plus the fee when charged in base)
  and adds it to the progress; it never closes anything.
- ``close_sell`` is applied when the sell order closes (filled or cancelled).

When ``close_sell`` finds something sold and what is left on the level can no longer
make an order on its own (see ``levels.holds_inventory``), it returns exactly one
``RoundTrip`` and the level drops to holding 0, cost 0, same cycle; the progress starts
again from zero. When sellable inventory is left (a cancelled partial sell), no round
trip is emitted and the progress is carried into the next sell. The round trip holds:

- ``amount`` = base sold;
- ``buy_cost`` = the level's whole cost (the unsold dust counts as sold at cost);
- ``sell_proceeds`` = quote received net of fees;
- ``pnl = sell_proceeds - buy_cost``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Context, Decimal, localcontext

from quantmesh.domain import Fill, MarketRules
from quantmesh.grid.levels import holds_inventory
from quantmesh.grid.state import LevelState, RoundTrip

__all__ = [
    "FillOutcome",
    "SellProgress",
    "apply_buy_fill",
    "apply_sell_fill",
    "close_buy",
    "close_sell",
    "sell_progress",
]

_CTX = Context(prec=60)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class SellProgress:
    """What the sells of one level and cycle have done so far."""

    amount: Decimal = _ZERO
    """Base currency sold."""
    proceeds: Decimal = _ZERO
    """Quote currency received, net of fees charged in quote."""


@dataclass(frozen=True, slots=True)
class FillOutcome:
    """The level after a sell closed, the progress to carry on, and the round trip if any."""

    level: LevelState
    progress: SellProgress
    round_trip: RoundTrip | None


def _check_fill(amount: Decimal, price: Decimal, fee: Decimal) -> None:
    if not amount.is_finite() or not amount > 0:
        raise ValueError(f"fill amount must be positive, got {amount}")
    if not price.is_finite() or not price > 0:
        raise ValueError(f"fill price must be positive, got {price}")
    if not fee.is_finite():
        raise ValueError(f"fill fee must be finite, got {fee}")


def apply_buy_fill(
    level: LevelState,
    amount: Decimal,
    price: Decimal,
    fee: Decimal,
    fee_currency: str,
    rules: MarketRules,
) -> LevelState:
    """Add one buy fill to the level's holding and cost."""
    _check_fill(amount, price, fee)
    with localcontext(_CTX):
        holding = level.holding + amount
        cost = level.cost + price * amount
        if fee_currency == rules.base:
            holding -= fee
        elif fee_currency == rules.quote:
            cost += fee
    return replace(level, holding=holding, cost=cost)


def close_buy(level: LevelState) -> LevelState:
    """The buy order of this level closed: a new cycle starts when it bought something."""
    if level.holding > 0:
        return replace(level, cycle=level.cycle + 1)
    return level


def apply_sell_fill(
    level: LevelState,
    progress: SellProgress,
    amount: Decimal,
    price: Decimal,
    fee: Decimal,
    fee_currency: str,
    rules: MarketRules,
) -> tuple[LevelState, SellProgress]:
    """Take one sell fill off the level's holding and add it to the progress.

    The holding never goes below zero (a fee charged in base on the last fill may exceed the
    last crumbs); ``cost`` is left as is until ``close_sell``.
    """
    _check_fill(amount, price, fee)
    with localcontext(_CTX):
        sold = amount + fee if fee_currency == rules.base else amount
        proceeds = price * amount
        if fee_currency == rules.quote:
            proceeds -= fee
        holding = max(level.holding - sold, _ZERO)
        progress = SellProgress(progress.amount + amount, progress.proceeds + proceeds)
    return replace(level, holding=holding), progress


def close_sell(
    level: LevelState,
    progress: SellProgress,
    rules: MarketRules,
    *,
    symbol: str,
    ts: float,
) -> FillOutcome:
    """The sell order of this level closed (filled or cancelled); settle the round trip."""
    if progress.amount <= 0 or holds_inventory(level.holding, rules):
        return FillOutcome(level=level, progress=progress, round_trip=None)
    with localcontext(_CTX):
        pnl = progress.proceeds - level.cost
    trip = RoundTrip(
        symbol=symbol,
        level=level.index,
        cycle=level.cycle,
        amount=progress.amount,
        buy_cost=level.cost,
        sell_proceeds=progress.proceeds,
        pnl=pnl,
        closed_at=ts,
    )
    settled = replace(level, holding=_ZERO, cost=_ZERO)
    return FillOutcome(level=settled, progress=SellProgress(), round_trip=trip)


def sell_progress(fills: Iterable[Fill], rules: MarketRules) -> SellProgress:
    """The progress of a level's sale rebuilt from its stored sell fills (after a restart)."""
    with localcontext(_CTX):
        amount = _ZERO
        proceeds = _ZERO
        for fill in fills:
            amount += fill.amount
            proceeds += fill.price * fill.amount
            if fill.fee_currency == rules.quote:
                proceeds -= fill.fee
    return SellProgress(amount, proceeds)
