"""ccxt's unified structures -> QuantMesh domain values, pure.

ccxt hands numbers as floats parsed from the exchange's strings; ``str(float)`` gives the
shortest repr, which is the exchange's decimal for every price and amount a market's
precision allows.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from quantmesh.domain import Fill, MarketRules, Order, OrderRequest, OrderStatus, Side, Tick

# ccxt.base.decimal_to_precision.TICK_SIZE; repeated to keep this module import-light.
TICK_SIZE_MODE = 4
_STATUS: dict[str, OrderStatus] = {
    "open": "open",
    "closed": "filled",
    "canceled": "canceled",
    "cancelled": "canceled",
    "expired": "expired",
    "rejected": "rejected",
}


def dec(value: Any, default: Decimal | None = None) -> Decimal:
    if value is None or value == "":
        if default is None:
            raise ValueError("missing number")
        return default
    return Decimal(str(value))


def _seconds(milliseconds: Any, default: float) -> float:
    return float(milliseconds) / 1000 if milliseconds is not None else default


def market_rules(market: dict[str, Any], precision_mode: int) -> MarketRules:
    """Tick, lot and minimums of a ccxt market; precision in digits becomes a step."""
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}

    def step(value: Any) -> Decimal:
        if value is None:
            raise ValueError(f"market {market.get('symbol')} has no precision")
        if precision_mode == TICK_SIZE_MODE:
            return dec(value)
        return Decimal(1).scaleb(-int(value))

    tick = step(precision.get("price"))
    lot = step(precision.get("amount"))
    min_amount = dec((limits.get("amount") or {}).get("min"), lot)
    min_notional = dec((limits.get("cost") or {}).get("min"), Decimal(0))
    return MarketRules(
        symbol=str(market["symbol"]),
        base=str(market["base"]),
        quote=str(market["quote"]),
        tick_size=tick,
        lot_size=lot,
        min_amount=max(min_amount, lot),
        min_notional=min_notional,
    )


def ticker_price(ticker: dict[str, Any]) -> Decimal | None:
    """The last trade price, else the mid of bid and ask, else the close."""
    last = ticker.get("last")
    if last:
        return dec(last)
    bid, ask = ticker.get("bid"), ticker.get("ask")
    if bid and ask:
        return (dec(bid) + dec(ask)) / 2
    close = ticker.get("close")
    return dec(close) if close else None


def to_tick(symbol: str, ticker: dict[str, Any], now: float | None = None) -> Tick | None:
    price = ticker_price(ticker)
    if price is None or price <= 0:
        return None
    wall = time.time() if now is None else now
    return Tick(symbol, price, _seconds(ticker.get("timestamp"), wall))


def to_order(raw: dict[str, Any], symbol: str, request: OrderRequest | None = None) -> Order:
    """A ccxt order; fields the exchange left out are taken from ``request`` if given."""
    now = time.time()
    status = _STATUS.get(str(raw.get("status") or "open"), "open")
    amount = dec(raw.get("amount"), request.amount if request else None)
    filled = dec(raw.get("filled"), Decimal(0))
    if status == "filled" and filled == 0:
        filled = amount  # some exchanges report a closed order without its filled amount
    side = raw.get("side") or (request.side if request else None)
    if side not in ("buy", "sell"):
        raise ValueError(f"order {raw.get('id')} has no side")
    cid = raw.get("clientOrderId") or (request.client_order_id if request else "")
    created = _seconds(raw.get("timestamp"), now)
    updated = _seconds(
        raw.get("lastUpdateTimestamp") or raw.get("lastTradeTimestamp") or raw.get("timestamp"),
        created,
    )
    return Order(
        symbol=symbol,
        side=side,
        price=dec(raw.get("price"), request.price if request else None),
        amount=amount,
        client_order_id=str(cid),
        exchange_order_id=str(raw["id"]),
        status=status,
        filled=filled,
        created_at=created,
        updated_at=max(updated, created),
    )


def to_fill(trade: dict[str, Any], order: Order, quote: str) -> Fill:
    """A ccxt trade of ``order``; a missing fee is zero in the quote currency."""
    fee = trade.get("fee") or {}
    side: Side = trade.get("side") or order.side
    return Fill(
        trade_id=str(trade["id"]),
        symbol=order.symbol,
        side=side,
        price=dec(trade["price"]),
        amount=dec(trade["amount"]),
        fee=dec(fee.get("cost"), Decimal(0)),
        fee_currency=str(fee.get("currency") or quote),
        client_order_id=order.client_order_id,
        exchange_order_id=order.exchange_order_id,
        ts=_seconds(trade.get("timestamp"), time.time()),
    )
