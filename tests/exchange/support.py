"""Values shared by the exchange tests."""

from __future__ import annotations

from decimal import Decimal

from quantmesh.domain import MarketRules

ETH = MarketRules(
    symbol="ETH/USDT",
    base="ETH",
    quote="USDT",
    tick_size=Decimal("0.01"),
    lot_size=Decimal("0.0001"),
    min_amount=Decimal("0.001"),
    min_notional=Decimal(10),
)
BTC = MarketRules(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    tick_size=Decimal("0.1"),
    lot_size=Decimal("0.00001"),
    min_amount=Decimal("0.0001"),
    min_notional=Decimal(5),
)
