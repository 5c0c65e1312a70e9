"""The pure parts of the ccxt adapter: error mapping, conversions, backoff."""

from __future__ import annotations

from decimal import Decimal

import ccxt
import pytest

from quantmesh.domain import OrderRequest
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
)
from quantmesh.exchange.backoff import Backoff
from quantmesh.exchange.ccxt.convert import market_rules, to_fill, to_order, to_tick
from quantmesh.exchange.ccxt.errors import clean_message, outcome_unknown, retry_after, translate


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ccxt.AuthenticationError("bad key"), AuthenticationFailed),
        (ccxt.PermissionDenied("no trading"), AuthenticationFailed),
        (ccxt.AccountSuspended("suspended"), AuthenticationFailed),
        (ccxt.OrderNotFound("gone"), OrderNotFound),
        (ccxt.DuplicateOrderId("dup"), DuplicateOrder),
        (ccxt.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}'), DuplicateOrder),
        (ccxt.InsufficientFunds("poor"), InsufficientFunds),
        (ccxt.BadSymbol("what"), MarketNotFound),
        (ccxt.InvalidOrder("LOT_SIZE"), InvalidOrder),
        (ccxt.BadRequest("Filter failure: NOTIONAL"), InvalidOrder),
        (ccxt.OperationRejected("no"), OrderRejected),
        (ccxt.RateLimitExceeded("slow"), RateLimited),
        (ccxt.DDoSProtection("418"), RateLimited),
        (ccxt.RequestTimeout("timeout"), Disconnected),
        (ccxt.ExchangeNotAvailable("503"), Disconnected),
        (ccxt.InvalidNonce("clock"), Disconnected),
        (ccxt.OperationFailed("-1001 internal"), Disconnected),
        (ccxt.NotSupported("nope"), ExchangeError),
        (OSError("reset"), Disconnected),
    ],
)
def test_every_ccxt_error_maps_to_a_quantmesh_error(exc: Exception, expected: type) -> None:
    error = translate(exc, symbol="ETH/USDT", client_order_id="qm.x")
    assert type(error) is expected


def test_unknown_outcomes_are_the_ones_to_look_up() -> None:
    assert outcome_unknown(Disconnected("x")) and outcome_unknown(ExchangeError("x"))
    for final in (InvalidOrder("x"), RateLimited("x"), AuthenticationFailed("x")):
        assert not outcome_unknown(final)
    assert not outcome_unknown(DuplicateOrder("qm.x"))


def test_messages_drop_query_strings_that_carry_signatures() -> None:
    exc = ccxt.RequestTimeout("binance GET http://h/api/v3/order?timestamp=1&signature=abcd")
    assert "signature" not in clean_message(exc)
    assert len(clean_message(ccxt.ExchangeError("x" * 1000))) <= 300


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after({"Retry-After": "7"}, 0) == 7
    assert retry_after({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, 4) == pytest.approx(6)
    assert retry_after({}, 0) is None
    assert retry_after({"Retry-After": "soon"}, 0) is None


def test_market_rules_from_tick_size_and_decimal_places() -> None:
    market = {
        "symbol": "ETH/USDT", "base": "ETH", "quote": "USDT",
        "precision": {"price": 0.01, "amount": 1e-05},
        "limits": {"amount": {"min": 0.0001}, "cost": {"min": 5.0}},
    }  # fmt: skip
    rules = market_rules(market, 4)
    assert (rules.tick_size, rules.lot_size) == (Decimal("0.01"), Decimal("0.00001"))
    assert (rules.min_amount, rules.min_notional) == (Decimal("0.0001"), Decimal(5))
    digits = market_rules({**market, "precision": {"price": 2, "amount": 4}, "limits": {}}, 2)
    assert (digits.tick_size, digits.lot_size) == (Decimal("0.01"), Decimal("0.0001"))
    assert (digits.min_amount, digits.min_notional) == (Decimal("0.0001"), Decimal(0))


def test_orders_trades_and_tickers_convert() -> None:
    request = OrderRequest("ETH/USDT", "buy", Decimal(1995), Decimal("0.015"), "qm.a.B-1.0")
    raw = {"id": "42", "status": "closed", "side": "buy", "price": 1995.0, "amount": 0.015,
           "filled": 0.015, "clientOrderId": "qm.a.B-1.0", "timestamp": 1_700_000_000_000}  # fmt: skip
    order = to_order(raw, "ETH/USDT", request)
    assert (order.status, order.filled, order.exchange_order_id) == (
        "filled",
        Decimal("0.015"),
        "42",
    )
    assert order.created_at == 1_700_000_000
    sparse = to_order({"id": "43", "status": "open"}, "ETH/USDT", request)
    assert (sparse.price, sparse.amount, sparse.client_order_id) == (
        Decimal(1995), Decimal("0.015"), "qm.a.B-1.0"
    )  # fmt: skip
    trade = {"id": 7, "price": 1995.0, "amount": 0.015, "fee": None, "timestamp": 1_700_000_001_000}
    fill = to_fill(trade, order, "USDT")
    assert (fill.trade_id, fill.fee, fill.fee_currency) == ("7", Decimal(0), "USDT")
    tick = to_tick("ETH/USDT", {"last": None, "bid": 10, "ask": 12})
    assert tick is not None and tick.price == Decimal(11)
    assert to_tick("ETH/USDT", {"last": None}) is None


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    low = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert low.next() == 0.25 and backoff.next() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_the_ccxt_exchange_reports_price_health() -> None:
    from quantmesh.exchange.base import Exchange, PriceHealth
    from quantmesh.exchange.ccxt.client import create_client
    from quantmesh.exchange.ccxt.exchange import CcxtExchange

    exchange = CcxtExchange(create_client("binance"))
    assert exchange.price_health() is exchange
    _health: PriceHealth = exchange  # structurally a PriceHealth (checked by mypy)
    assert exchange.price_age("ETH/USDT") is None and not exchange.price_fresh("ETH/USDT")
    _: Exchange = exchange  # structurally an Exchange too (checked by mypy)


def test_client_order_ids_fit_alphanumeric_exchanges_and_come_back() -> None:
    from quantmesh.exchange.ccxt.ids import IdCodec
    from quantmesh.grid.ids import client_order_id, parse_client_order_id

    okx, binance = IdCodec("okx"), IdCodec("binance")
    for level in (-12, 0, 7):
        ours = client_order_id("3fa9c2", level, "buy", 4)
        wire = okx.encode(ours)
        assert wire.isalnum() and len(wire) <= 32
        assert okx.decode(wire) == ours and parse_client_order_id(okx.decode(wire)) is not None
        assert binance.encode(ours) == ours == binance.decode(ours)
    assert okx.decode("foreign-1.x") == "foreign-1.x"


def test_the_request_spacing_is_ccxts_unless_configured() -> None:
    from quantmesh.exchange.ccxt.client import create_client

    default = create_client("binance")
    assert default.rateLimit == type(default)().rateLimit  # the exchange's published limit
    assert create_client("binance", rate_limit=0.005).rateLimit == 5
