"""Every ccxt exception -> a ``quantmesh.errors`` exception, pure.

The order of the checks follows ccxt's hierarchy, most specific first (``OrderNotFound``
and ``DuplicateOrderId`` are ``InvalidOrder``s; ``DDoSProtection`` and ``RateLimitExceeded``
are ``NetworkError``s, so they come before it). Messages lose any URL query string (it
carries the request signature) and are kept short; API keys never appear in them (ccxt
sends the key in a header).

A request the exchange refused as expired (Binance ``-1021``/``-5028``, OKX ``50102``,
Bybit ``10002``, see ``expiry``) was certainly not executed: it becomes
``RequestExpired``, so it is never taken for an unknown outcome and looked up or retried.
That check comes before ccxt's class (ccxt files these under ``BadRequest``,
``InvalidNonce`` or ``OperationFailed``).

Our own errors raised inside a ccxt call (an expiry refused while signing) pass through.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import ccxt

from quantmesh.errors import (
    AuthenticationFailed,
    Disconnected,
    DuplicateOrder,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    MarketNotFound,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    RequestExpired,
)
from quantmesh.exchange.ccxt.expiry import expiry_refusal

_QUERY = re.compile(r"\?\S*")
_MAX_MESSAGE = 300
# Exchanges that reject a reused client order id without a dedicated code say so in words.
_DUPLICATE_WORDS = ("duplicate order", "duplicate client", "clientorderid is duplicated")
# Error codes in an exchange's JSON answer, which ccxt puts in its message: Binance
# ``"code":-1021``, OKX ``"code":"1"`` with ``"sCode":"50037"``, Bybit ``"retCode":10002``.
_CODES = re.compile(r'"(?:code|sCode|retCode|ret_code)"\s*:\s*"?(-?\d+)')


def error_codes(exc: BaseException) -> set[str]:
    """The exchange error codes quoted in a ccxt exception's message."""
    return set(_CODES.findall(str(exc)))


def clean_message(exc: BaseException) -> str:
    text = _QUERY.sub("", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def retry_after(headers: Mapping[str, Any] | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        return max(0.0, parsedate_to_datetime(str(value)).timestamp() - now)
    except (TypeError, ValueError):
        return None


def translate(
    exc: Exception,
    *,
    symbol: str = "",
    client_order_id: str = "",
    retry_after_s: float | None = None,
    exchange: str = "",
) -> ExchangeError:
    """The QuantMesh error for a ccxt (or transport) exception; ``exchange`` is the ccxt
    id, for its expiry error codes."""
    if isinstance(exc, ExchangeError):
        return exc
    message = clean_message(exc)
    if isinstance(exc, ccxt.BaseError) and expiry_refusal(exchange, error_codes(exc)):
        return RequestExpired(f"refused by the exchange as expired: {message}")
    if isinstance(exc, ccxt.AuthenticationError):
        return AuthenticationFailed(message)
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFound(client_order_id)
    if isinstance(exc, ccxt.DuplicateOrderId) or (
        isinstance(exc, ccxt.InvalidOrder)
        and any(word in message.lower() for word in _DUPLICATE_WORDS)
    ):
        return DuplicateOrder(client_order_id)
    if isinstance(exc, ccxt.InsufficientFunds):
        return InsufficientFunds(message)
    if isinstance(exc, ccxt.BadSymbol):
        return MarketNotFound(symbol) if symbol else InvalidOrder(message)
    if isinstance(exc, ccxt.InvalidOrder | ccxt.BadRequest | ccxt.ArgumentsRequired):
        return InvalidOrder(message)
    if isinstance(exc, ccxt.OperationRejected | ccxt.MarginModeAlreadySet):
        return OrderRejected(message)
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return RateLimited(message, retry_after_s)
    if isinstance(exc, ccxt.OperationFailed | OSError | TimeoutError):  # incl. NetworkError
        return Disconnected(message)
    return ExchangeError(message)


def outcome_unknown(error: ExchangeError) -> bool:
    """Whether a failed create may still have placed the order (look it up, do not resend)."""
    return not isinstance(
        error, OrderRejected | RateLimited | AuthenticationFailed | MarketNotFound | OrderNotFound
    )
