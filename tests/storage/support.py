"""Builders for storage test data."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine import Dialect

from quantmesh.domain import Fill, Order, OrderStatus, Side
from quantmesh.grid.state import RoundTrip

SYMBOL = "ETH/USDT"


def order(
    client_order_id: str = "c1",
    *,
    symbol: str = SYMBOL,
    side: Side = "buy",
    price: str = "100",
    amount: str = "0.3",
    status: OrderStatus = "open",
    filled: str = "0",
    exchange_order_id: str = "",
    created_at: float = 1000.0,
    updated_at: float | None = None,
) -> Order:
    return Order(
        symbol=symbol,
        side=side,
        price=Decimal(price),
        amount=Decimal(amount),
        client_order_id=client_order_id,
        exchange_order_id=exchange_order_id,
        status=status,
        filled=Decimal(filled),
        created_at=created_at,
        updated_at=created_at if updated_at is None else updated_at,
    )


def fill(
    trade_id: str = "t1",
    *,
    symbol: str = SYMBOL,
    side: Side = "buy",
    price: str = "100",
    amount: str = "0.1",
    fee: str = "0.0001",
    ts: float = 1000.0,
    client_order_id: str = "c1",
) -> Fill:
    return Fill(
        trade_id=trade_id,
        symbol=symbol,
        side=side,
        price=Decimal(price),
        amount=Decimal(amount),
        fee=Decimal(fee),
        fee_currency="USDT",
        client_order_id=client_order_id,
        exchange_order_id="x-" + client_order_id,
        ts=ts,
    )


def round_trip(
    level: int = 0,
    cycle: int = 1,
    *,
    symbol: str = SYMBOL,
    pnl: str = "0.25",
    closed_at: float = 2000.0,
) -> RoundTrip:
    buy_cost = Decimal(30)
    return RoundTrip(
        symbol=symbol,
        level=level,
        cycle=cycle,
        amount=Decimal("0.3"),
        buy_cost=buy_cost,
        sell_proceeds=buy_cost + Decimal(pnl),
        pnl=Decimal(pnl),
        closed_at=closed_at,
    )


def postgres_dialect() -> Dialect:
    return PGDialect()  # type: ignore[no-untyped-call]  # sqlalchemy leaves it untyped
