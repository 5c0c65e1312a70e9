"""Value types shared by the grid, the exchanges, storage and the trader.

Prices and amounts are ``Decimal``; timestamps are epoch seconds as ``float``.
Symbols are in unified form, ``BASE/QUOTE`` (``ETH/USDT``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

Side = Literal["buy", "sell"]
OrderStatus = Literal["open", "filled", "canceled", "rejected", "expired"]
CLOSED_STATUSES: frozenset[str] = frozenset({"filled", "canceled", "rejected", "expired"})


def compact_symbol(symbol: str) -> str:
    """``ETH/USDT`` -> ``ETHUSDT``: the form used in lock keys and metric labels."""
    return symbol.replace("/", "")


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` down to a multiple of ``step``."""
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` up to a multiple of ``step``."""
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


@dataclass(frozen=True, slots=True)
class MarketRules:
    """What the exchange accepts for one symbol."""

    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal
    min_amount: Decimal
    min_notional: Decimal


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    price: Decimal
    ts: float


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A limit order to place; ``client_order_id`` makes the request idempotent."""

    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    client_order_id: str
    # A ``time.monotonic()`` value after which the exchange must refuse this request (the
    # end of the leases it was sent under); ``None``: no expiry beyond the exchange's own.
    expires_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Order:
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    client_order_id: str
    exchange_order_id: str
    status: OrderStatus
    filled: Decimal
    created_at: float
    updated_at: float
    # The level lock's fence under which this order was placed (None: not placed by us,
    # or placed without a fenced lock). Audit only: not part of the order's identity.
    lock_fence: int | None = field(default=None, compare=False)

    @property
    def is_open(self) -> bool:
        return self.status == "open"


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution (the seed's "trade"); unique per (symbol, trade_id)."""

    trade_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    client_order_id: str
    exchange_order_id: str
    ts: float


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """The state of an order after a change, with the fills that caused it."""

    order: Order
    fills: tuple[Fill, ...] = ()


FILL_TOLERANCE = Decimal("1e-8")  # relative: an exchange may round ``filled`` apart from its trades


def fills_cover(order: Order, fills: Sequence[Fill]) -> bool:
    """Whether ``fills`` account for everything ``order`` says it filled.

    An exchange can report an order filled before its trades endpoint lists the trades;
    closing a level on such an answer would lose the fill (and free the level to buy
    again), so callers look the order up again instead.
    """
    total = sum((f.amount for f in fills), Decimal(0))
    return total >= order.filled * (1 - FILL_TOLERANCE)


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """The exchange's clock against this host's, as last measured."""

    offset: float
    """Seconds the exchange's clock is ahead of this host's wall clock (negative: behind)."""
    uncertainty: float
    """How far ``offset`` may be off: half the round trip of the measurement, in seconds."""
    measured_at: float
    """When it was measured (epoch seconds)."""
