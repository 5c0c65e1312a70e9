"""The Binance spot wire format, pure: signatures, error bodies, JSON of markets and orders.

The JSON of markets, orders, fills and events is built from the matching engine's domain
values. Only what ccxt's ``binance`` class reads is produced; field names follow the
Binance spot API documentation (binance/binance-spot-api-docs).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from quantmesh.domain import Fill, MarketRules, Order, compact_symbol
from quantmesh.errors import InvalidOrder

Json = dict[str, Any]

_STATUS = {
    "open": "NEW",
    "filled": "FILLED",
    "canceled": "CANCELED",
    "rejected": "REJECTED",
    "expired": "EXPIRED",
}
_SIGNATURE = re.compile(r"(^|&)signature=[^&]*")
_TIMESTAMP = re.compile(r"[0-9]{1,20}")
_RECV_WINDOW = re.compile(r"[0-9]{1,20}(\.[0-9]{1,3})?")
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000


@dataclass(frozen=True, slots=True)
class ApiError(Exception):
    """A Binance error answer: HTTP status and the ``{"code", "msg"}`` body."""

    status: int
    code: int
    msg: str

    def body(self) -> Json:
        return {"code": self.code, "msg": self.msg}


INVALID_KEY = ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
BAD_SIGNATURE = ApiError(400, -1022, "Signature for this request is not valid.")
DUPLICATE = ApiError(400, -2010, "Duplicate order sent.")
INSUFFICIENT = ApiError(400, -2010, "Account has insufficient balance for requested action.")
UNKNOWN_ORDER = ApiError(400, -2013, "Order does not exist.")
CANCEL_UNKNOWN = ApiError(400, -2011, "Unknown order sent.")
BAD_SYMBOL = ApiError(400, -1121, "Invalid symbol.")
TOO_MANY_REQUESTS = ApiError(
    429, -1003, "Too many requests; current limit of IP is 6000 requests per minute."
)


def missing(param: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{param}' was not sent, was empty/null.")


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def check_signature(secret: str, query: str, body: str) -> None:
    """Binance signs ``query + body`` (the parameters in the order sent) minus ``signature``."""
    total = query + body
    match = _SIGNATURE.search(total)
    if match is None:
        raise missing("signature")
    given = match.group(0).split("=", 1)[1]
    payload = _SIGNATURE.sub("", total).lstrip("&")
    if not hmac.compare_digest(sign(secret, payload), given):
        raise BAD_SIGNATURE


def ws_payload(params: Mapping[str, Any]) -> str:
    """The WebSocket API signature payload: every parameter but ``signature``, sorted by
    name, ``name=value`` joined by ``&``, values as written (booleans ``true``/``false``)."""
    return "&".join(
        f"{name}={_ws_value(params[name])}" for name in sorted(params) if name != "signature"
    )


def _ws_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ws_params(params: Mapping[str, Any]) -> dict[str, str]:
    """WebSocket API parameters (JSON values) as the text a REST call would carry them in."""
    return {name: _ws_value(value) for name, value in params.items()}


def check_ws_signature(secret: str, params: Mapping[str, Any]) -> None:
    """WebSocket API: HMAC-SHA256 of ``ws_payload(params)``."""
    given = str(params.get("signature", ""))
    if not given:
        raise missing("signature")
    if not hmac.compare_digest(sign(secret, ws_payload(params)), given):
        raise BAD_SIGNATURE


def check_timestamp(params: Mapping[str, str], now_us: int) -> None:
    """Binance's request expiry, against the server clock ``now_us`` (microseconds).

    ``timestamp`` is in milliseconds; ``recvWindow`` (default 5000, at most 60000) in
    milliseconds with up to three decimals (Binance accepts microsecond windows). Refused
    (-1021) when ``timestamp`` is more than 1000 ms ahead of the server, or older than
    ``recvWindow``.
    """
    raw_ts = params.get("timestamp")
    if not raw_ts:
        raise missing("timestamp")
    if not _TIMESTAMP.fullmatch(raw_ts):
        raise ApiError(
            400,
            -1100,
            "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'.",
        )
    raw_window = params.get("recvWindow") or str(DEFAULT_RECV_WINDOW)
    if not _RECV_WINDOW.fullmatch(raw_window):
        raise ApiError(
            400,
            -1100,
            "Illegal characters found in parameter 'recvWindow'; "
            "legal range is '^[0-9]{1,20}(\\.[0-9]{1,3})?$'.",
        )
    window_us = int(Decimal(raw_window) * 1000)
    if not 0 < window_us <= MAX_RECV_WINDOW * 1000:
        raise ApiError(400, -1131, "recvWindow must be less than 60000")
    ts_us = int(raw_ts) * 1000
    if ts_us > now_us + 1_000_000:
        raise ApiError(
            400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        )
    if now_us - ts_us > window_us:
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def rejection(exc: InvalidOrder) -> ApiError:
    """The Binance error for an order the engine found invalid (the filter it broke)."""
    text = str(exc)
    if "client order id" in text:
        return ApiError(400, -1100, "Illegal characters found in parameter 'newClientOrderId'.")
    if "tick size" in text or ("price" in text and "positive" in text):
        return ApiError(400, -1013, "Filter failure: PRICE_FILTER")
    if "notional" in text:
        return ApiError(400, -1013, "Filter failure: NOTIONAL")
    return ApiError(400, -1013, "Filter failure: LOT_SIZE")


def _num(value: Decimal) -> str:
    return f"{value:f}"


def _milliseconds(ts: float) -> int:
    return int(ts * 1000)


def symbol_info(rules: MarketRules) -> Json:
    return {
        "symbol": compact_symbol(rules.symbol),
        "status": "TRADING",
        "baseAsset": rules.base,
        "baseAssetPrecision": 8,
        "quoteAsset": rules.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "quoteOrderQtyMarketAllowed": False,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _num(rules.tick_size),
                "maxPrice": "1000000.00000000",
                "tickSize": _num(rules.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _num(rules.min_amount),
                "maxQty": "9000000.00000000",
                "stepSize": _num(rules.lot_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": _num(rules.min_notional),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }


def exchange_info(markets: Iterable[MarketRules], now_ms: int) -> Json:
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(r) for r in markets],
    }  # fmt: skip


def order_json(order: Order, fills: Iterable[Fill] = ()) -> Json:
    """An order as ``GET /api/v3/order`` (and, with ``fills``, ``POST`` FULL) returns it."""
    fills = list(fills)
    quote = sum((f.price * f.amount for f in fills), Decimal(0))
    body: Json = {
        "symbol": compact_symbol(order.symbol),
        "orderId": int(order.exchange_order_id),
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": _num(order.price),
        "origQty": _num(order.amount),
        "executedQty": _num(order.filled),
        "cummulativeQuoteQty": _num(quote),
        "status": _STATUS[order.status],
        "timeInForce": "GTC",
        "type": "LIMIT",
        "side": order.side.upper(),
        "stopPrice": "0.00000000",
        "icebergQty": "0.00000000",
        "time": _milliseconds(order.created_at),
        "updateTime": _milliseconds(order.updated_at),
        "isWorking": True,
        "workingTime": _milliseconds(order.created_at),
        "origQuoteOrderQty": "0.00000000",
        "selfTradePreventionMode": "NONE",
    }
    return body


def cancel_json(order: Order) -> Json:
    """The ``DELETE /api/v3/order`` (and ``order.cancel``) answer."""
    body = order_json(order)
    body["origClientOrderId"] = order.client_order_id
    return body


def new_order_json(order: Order, fills: Iterable[Fill]) -> Json:
    """The ``POST /api/v3/order`` answer (``newOrderRespType=FULL``)."""
    fills = list(fills)
    body = order_json(order, fills)
    body["transactTime"] = _milliseconds(order.updated_at)
    body["fills"] = [
        {
            "price": _num(f.price),
            "qty": _num(f.amount),
            "commission": _num(f.fee),
            "commissionAsset": f.fee_currency,
            "tradeId": int(f.trade_id),
        }
        for f in fills
    ]
    return body


def trade_json(fill: Fill, maker: bool) -> Json:
    """One entry of ``GET /api/v3/myTrades``."""
    return {
        "symbol": compact_symbol(fill.symbol),
        "id": int(fill.trade_id),
        "orderId": int(fill.exchange_order_id),
        "orderListId": -1,
        "price": _num(fill.price),
        "qty": _num(fill.amount),
        "quoteQty": _num(fill.price * fill.amount),
        "commission": _num(fill.fee),
        "commissionAsset": fill.fee_currency,
        "time": _milliseconds(fill.ts),
        "isBuyer": fill.side == "buy",
        "isMaker": maker,
        "isBestMatch": True,
    }


def execution_report(order: Order, fill: Fill | None, now_ms: int) -> Json:
    """The user-data-stream event of an order change (a fill or a cancellation)."""
    quote = fill.price * fill.amount if fill is not None else Decimal(0)
    return {
        "e": "executionReport",
        "E": now_ms,
        "s": compact_symbol(order.symbol),
        "c": order.client_order_id,
        "S": order.side.upper(),
        "o": "LIMIT",
        "f": "GTC",
        "q": _num(order.amount),
        "p": _num(order.price),
        "P": "0.00000000",
        "F": "0.00000000",
        "g": -1,
        "C": order.client_order_id if order.status == "canceled" else "",
        "x": "TRADE" if fill is not None else _STATUS[order.status],
        "X": _STATUS[order.status],
        "r": "NONE",
        "i": int(order.exchange_order_id),
        "l": _num(fill.amount) if fill is not None else "0.00000000",
        "z": _num(order.filled),
        "L": _num(fill.price) if fill is not None else "0.00000000",
        "n": _num(fill.fee) if fill is not None else "0",
        "N": fill.fee_currency if fill is not None else None,
        "T": _milliseconds(fill.ts) if fill is not None else _milliseconds(order.updated_at),
        "t": int(fill.trade_id) if fill is not None else -1,
        "I": int(order.exchange_order_id) * 2,
        "w": order.is_open,
        "m": fill is not None,
        "M": False,
        "O": _milliseconds(order.created_at),
        "Z": _num(quote),
        "Y": _num(quote),
        "Q": "0.00000000",
        "W": _milliseconds(order.created_at),
        "V": "NONE",
    }


def ticker_24hr(rules: MarketRules, price: Decimal, now_ms: int) -> Json:
    """``GET /api/v3/ticker/24hr`` for one symbol; the simulator keeps no 24 h history,
    so open, high and low are the last price."""
    bid, ask = price - rules.tick_size, price + rules.tick_size
    price_text = _num(price)
    return {
        "symbol": compact_symbol(rules.symbol),
        "priceChange": "0.00000000",
        "priceChangePercent": "0.000",
        "weightedAvgPrice": price_text,
        "prevClosePrice": price_text,
        "lastPrice": price_text,
        "lastQty": "0.00000000",
        "bidPrice": _num(bid),
        "bidQty": "1.00000000",
        "askPrice": _num(ask),
        "askQty": "1.00000000",
        "openPrice": price_text,
        "highPrice": price_text,
        "lowPrice": price_text,
        "volume": "0.00000000",
        "quoteVolume": "0.00000000",
        "openTime": now_ms - 86_400_000,
        "closeTime": now_ms,
        "firstId": -1,
        "lastId": -1,
        "count": 0,
    }


def ticker_event(rules: MarketRules, price: Decimal, now_ms: int) -> Json:
    """The ``<symbol>@ticker`` stream event."""
    ticker = ticker_24hr(rules, price, now_ms)
    return {
        "e": "24hrTicker",
        "E": now_ms,
        "s": ticker["symbol"],
        "p": ticker["priceChange"],
        "P": ticker["priceChangePercent"],
        "w": ticker["weightedAvgPrice"],
        "x": ticker["prevClosePrice"],
        "c": ticker["lastPrice"],
        "Q": ticker["lastQty"],
        "b": ticker["bidPrice"],
        "B": ticker["bidQty"],
        "a": ticker["askPrice"],
        "A": ticker["askQty"],
        "o": ticker["openPrice"],
        "h": ticker["highPrice"],
        "l": ticker["lowPrice"],
        "v": ticker["volume"],
        "q": ticker["quoteVolume"],
        "O": ticker["openTime"],
        "C": ticker["closeTime"],
        "F": -1,
        "L": -1,
        "n": 0,
    }


def depth(rules: MarketRules, price: Decimal, limit: int, now_ms: int) -> Json:
    """A synthetic book around the last price, one lot-sized level per tick."""
    levels = max(1, min(limit, 100))
    qty = _num(max(rules.min_amount, rules.lot_size) * 100)
    bids = [[_num(price - rules.tick_size * (i + 1)), qty] for i in range(levels)]
    asks = [[_num(price + rules.tick_size * (i + 1)), qty] for i in range(levels)]
    return {"lastUpdateId": now_ms, "bids": [b for b in bids if Decimal(b[0]) > 0], "asks": asks}
