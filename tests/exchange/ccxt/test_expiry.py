"""Request expiry: the arithmetic (pure, injected clocks), the error codes, and the signed
requests ccxt's real binance, okx and bybit classes build with it (their HTTP call is
replaced by a recorder: the signing and the unified methods are ccxt's own)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt
import ccxt.async_support as ccxt_async
import pytest
import structlog

from quantmesh.errors import InvalidOrder, RequestExpired
from quantmesh.exchange.ccxt.errors import error_codes, outcome_unknown, translate
from quantmesh.exchange.ccxt.expiry import (
    ClockSample,
    ExchangeClock,
    ExpiryMargins,
    RequestExpiry,
    clock_sample,
    expiry_mechanism,
    preferred,
    wire_expiry,
)
from tests.support import FakeClock

MARGINS = ExpiryMargins(margin=0.020, drift_ppm=100.0, minimum=0.050, max_window=60.0)
MONO0 = 5_000.0  # monotonic clock at the measurement
OFFSET = 1_700_000_000.0  # exchange clock - monotonic clock, seconds


def sample(
    uncertainty: float = 0.002, offset: float = OFFSET, at: float = MONO0, wall_offset: float = 0.0
) -> ClockSample:
    return ClockSample(wall_offset, offset, uncertainty, at, at + 1_700_000_000.0)


# -- arithmetic -------------------------------------------------------------------------------


def test_the_deadline_ends_before_the_lease_by_uncertainty_drift_and_margin() -> None:
    now = MONO0 + 100.0  # 100 s after the measurement: 10 ms of drift at 100 ppm
    wire = wire_expiry(now + 2.0, now, sample(0.004), MARGINS)
    exchange_now_ms = (now + OFFSET) * 1000
    assert wire.stamp_ms == math.floor(exchange_now_ms)
    # 2 s left, less 4 ms uncertainty, 10 ms drift, 20 ms margin
    assert wire.deadline_ms == math.floor(exchange_now_ms + 2000 - 4 - 10 - 20)
    assert wire.window_ms in (1966, 1967)  # both floored


def test_the_deadline_never_passes_the_lease_on_the_exchange_clock() -> None:
    s = sample(0.0031)
    for now in (MONO0, MONO0 + 0.0004, MONO0 + 3600.123):
        slack = s.uncertainty_at(now, 100.0) + 0.020
        for sendable in (0.0501, 0.3, 1.23456, 7.0, 59.99):
            left = slack + sendable
            wire = wire_expiry(now + left, now, s, MARGINS)
            # the lease's end on the exchange clock, minus everything we may be off by
            end_ms = (now + left + OFFSET - s.uncertainty_at(now, 100.0)) * 1000
            assert wire.deadline_ms <= end_ms - 20 + 1e-3
            assert wire.stamp_ms <= (now + OFFSET) * 1000
            assert wire.window_ms >= 49  # floored from at least 50.1 ms


def test_too_little_left_is_not_sent() -> None:
    now = MONO0
    with pytest.raises(RequestExpired, match="not sent"):
        wire_expiry(now + 0.070, now, sample(0.002), MARGINS)  # 48 ms after the slack
    wire = wire_expiry(now + 0.075, now, sample(0.002), MARGINS)  # 53 ms
    assert wire.window_ms >= 50
    with pytest.raises(RequestExpired):
        wire_expiry(now - 1.0, now, sample(), MARGINS)  # already past
    with pytest.raises(RequestExpired):
        wire_expiry(math.nan, now, sample(), MARGINS)


def test_nothing_is_sent_before_the_clock_is_measured() -> None:
    with pytest.raises(RequestExpired, match="not measured"):
        wire_expiry(MONO0 + 10.0, MONO0, None, MARGINS)


def test_the_window_is_capped_at_sixty_seconds() -> None:
    wire = wire_expiry(MONO0 + 600.0, MONO0, sample(), MARGINS)
    assert wire.window_ms == 60_000


def test_a_measurement_is_the_midpoint_and_half_the_round_trip() -> None:
    s = clock_sample(
        server_ms=1_700_000_000_500.0,
        t0_wall=1_700_000_000.0,
        t1_wall=1_700_000_000.2,
        t0_mono=10.0,
        t1_mono=10.2,
    )
    assert s.offset_wall == pytest.approx(0.4)
    assert s.offset_mono == pytest.approx(1_700_000_000.5 - 10.1)
    assert s.uncertainty == pytest.approx(0.1)
    assert s.public().offset == pytest.approx(0.4) and s.public().uncertainty == pytest.approx(0.1)


def test_the_more_certain_sample_is_kept_unless_the_clocks_disagree() -> None:
    good = sample(0.001, at=MONO0)
    noisy = sample(0.050, offset=OFFSET + 0.010, at=MONO0 + 60)
    assert preferred(None, noisy, MONO0 + 60, 100.0) is noisy
    assert preferred(good, noisy, MONO0 + 60, 100.0) is good  # 1 ms + 6 ms drift < 50 ms
    # an hour later the drift allowance (360 ms) makes the noisy one better
    late = sample(0.050, offset=OFFSET + 0.010, at=MONO0 + 3600)
    assert preferred(good, late, MONO0 + 3600, 100.0) is late
    # the exchange's clock jumped by 2 s: the new reading wins although noisier
    jumped = sample(0.050, offset=OFFSET + 2.0, at=MONO0 + 60)
    assert preferred(good, jumped, MONO0 + 60, 100.0) is jumped


# -- error codes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "exc"),
    [
        (
            "binance",
            ccxt.BadRequest(
                'binance {"code":-1021,"msg":"Timestamp for this request is outside of the '
                'recvWindow."}'
            ),
        ),
        (
            "binance",
            ccxt.OperationFailed(
                'binance {"code":-5028,"msg":"Timestamp for this request is outside of the ME '
                'recvWindow."}'
            ),
        ),
        ("binance", ccxt.InvalidNonce('binance {"code":-1021,"msg":"ahead"}')),
        (
            "okx",
            ccxt.ExchangeError(
                'okx {"code":"1","data":[{"clOrdId":"qmx","ordId":"","sCode":"50037",'
                '"sMsg":"Order expired."}],"msg":""}'
            ),
        ),
        ("okx", ccxt.InvalidNonce('okx {"code":"50102","msg":"Timestamp request expired"}')),
        ("bybit", ccxt.InvalidNonce('bybit {"retCode":10002,"retMsg":"invalid request"}')),
    ],
)
def test_expiry_refusals_are_certain_not_unknown(exchange: str, exc: Exception) -> None:
    error = translate(exc, client_order_id="qm.x", exchange=exchange)
    assert isinstance(error, RequestExpired) and error.reason == "expired"
    assert not outcome_unknown(error)  # never looked up, never resent


def test_codes_count_only_for_their_exchange() -> None:
    exc = ccxt.BadRequest('someexchange {"code":-1021,"msg":"Timestamp outside"}')
    assert isinstance(translate(exc, exchange="someexchange"), InvalidOrder)
    assert error_codes(exc) == {"-1021"}
    assert error_codes(ccxt.BadRequest("binance no json")) == set()


def test_our_own_errors_raised_inside_ccxt_pass_through() -> None:
    mine = RequestExpired("not sent")
    assert translate(mine, exchange="binance") is mine


def test_the_registry_names_each_supported_exchange() -> None:
    assert expiry_mechanism("binance") == "timestamp + recvWindow"
    assert expiry_mechanism("okx") is not None and "expTime" in str(expiry_mechanism("okx"))
    assert expiry_mechanism("bybit") is not None
    assert expiry_mechanism("kraken") is None


# -- signed requests of the real ccxt classes -------------------------------------------------


class Recorder:
    """Stands in for ccxt's HTTP call: records the signed request, answers from a script."""

    def __init__(self, answers: Callable[[str, str], Any]) -> None:
        self.requests: list[tuple[str, str, dict[str, str], str | None]] = []
        self._answers = answers

    async def __call__(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        self.requests.append((url, method, dict(headers or {}), body))
        return self._answers(url, method)

    def last(self, fragment: str) -> tuple[str, str, dict[str, str], str | None]:
        return [r for r in self.requests if fragment in r[0]][-1]


def expiring(client: Any, mono: FakeClock, s: ClockSample | None = None) -> RequestExpiry:
    clock = ExchangeClock(client, mono=mono)
    clock.sample = s if s is not None else sample(0.002, at=mono.now)
    return RequestExpiry(client, clock, MARGINS, mono=mono)


@pytest.fixture
async def binance() -> AsyncIterator[Any]:
    client = ccxt_async.binance({"apiKey": "key", "secret": "secret"})
    yield client
    await client.close()


async def test_binance_signs_timestamp_and_recv_window_into_the_order_request(
    binance: Any,
) -> None:
    mono = FakeClock(MONO0)
    expiry = expiring(binance, mono)
    with expiry.bound(MONO0 + 1.5):
        request = binance.sign("order", ["private"], "POST", {"symbol": "ETHUSDT"})
    wire = wire_expiry(MONO0 + 1.5, MONO0, expiry._clock.sample, MARGINS)
    params = dict(parse_qsl(request["body"]))
    assert params["timestamp"] == str(wire.stamp_ms)
    assert params["recvWindow"] == str(wire.window_ms)
    assert 1400 < wire.window_ms < 1500
    payload = request["body"].rsplit("&signature=", 1)[0]
    expected = hmac.new(b"secret", payload.encode(), hashlib.sha256).hexdigest()
    assert params["signature"] == expected  # the window and timestamp are signed
    # outside bound(), ccxt's own default window and clock
    plain = dict(parse_qsl(binance.sign("order", ["private"], "POST", {})["body"]))
    assert plain["recvWindow"] == "10000"
    # a cancel carries it in the query string
    with expiry.bound(MONO0 + 1.5):
        cancel = binance.sign("order", ["private"], "DELETE", {"symbol": "ETHUSDT"})
    assert dict(parse_qsl(urlsplit(cancel["url"]).query))["recvWindow"] == str(wire.window_ms)


async def test_an_order_write_that_cannot_carry_the_expiry_is_not_sent(binance: Any) -> None:
    expiry = expiring(binance, FakeClock(MONO0))
    with pytest.raises(RequestExpired, match="cannot carry"), expiry.bound(MONO0 + 5):
        binance.sign("order/cancelReplace", ["private"], "POST", {"symbol": "ETHUSDT"})
    with expiry.bound(MONO0 + 5):  # reads and public calls are left alone
        assert binance.sign("openOrders", ["private"], "GET", {})["url"]
        assert binance.sign("time", ["public"], "GET", {})["url"]


async def test_too_late_when_signed_is_refused_at_the_signing(binance: Any) -> None:
    mono = FakeClock(MONO0)
    expiry = expiring(binance, mono)
    with expiry.bound(MONO0 + 1.0):
        mono.now += 0.96  # ccxt's rate limiter held the request this long
        with pytest.raises(RequestExpired):
            binance.sign("order", ["private"], "POST", {"symbol": "ETHUSDT"})


async def test_without_a_measured_clock_nothing_is_sent(binance: Any) -> None:
    clock = ExchangeClock(binance)
    expiry = RequestExpiry(binance, clock, MARGINS, mono=FakeClock(MONO0))
    with pytest.raises(RequestExpired, match="not measured"), expiry.bound(MONO0 + 10):
        raise AssertionError("a request was let through without a measured clock")


OKX_INSTRUMENT = {
    "instType": "SPOT", "instId": "ETH-USDT", "baseCcy": "ETH", "quoteCcy": "USDT",
    "settleCcy": "", "ctValCcy": "", "ctVal": "", "ctMult": "", "listTime": "1606468572000",
    "expTime": "", "lever": "", "tickSz": "0.01", "lotSz": "0.000001", "minSz": "0.0001",
    "ctType": "", "alias": "", "state": "live", "maxLmtSz": "10000", "maxMktSz": "1000000",
}  # fmt: skip
OKX_ACK = {"code": "0", "msg": "", "data": [{"clOrdId": "qmx1", "ordId": "7", "sCode": "0"}]}


async def test_okx_order_placement_carries_exp_time_and_cancels_go_without() -> None:
    client = ccxt_async.okx({"apiKey": "key", "secret": "secret", "password": "pass"})
    try:
        client.set_markets([client.parse_market(OKX_INSTRUMENT)])
        client.fetch = Recorder(lambda url, method: OKX_ACK)
        mono = FakeClock(MONO0)
        expiry = expiring(client, mono)
        wire = wire_expiry(MONO0 + 3.0, MONO0, expiry._clock.sample, MARGINS)
        with expiry.bound(MONO0 + 3.0):
            await client.create_order("ETH/USDT", "limit", "buy", 0.01, 1500, {"clOrdId": "qmx1"})
        url, method, headers, body = client.fetch.last("/trade/")
        assert method == "POST" and url.endswith(("/trade/order", "/trade/batch-orders"))
        assert headers["expTime"] == str(wire.deadline_ms)
        # the signature still matches what OKX signs (timestamp, method, path, body)
        auth = headers["OK-ACCESS-TIMESTAMP"] + "POST" + urlsplit(url).path + (body or "")
        digest = hmac.new(b"secret", auth.encode(), hashlib.sha256).digest()
        assert headers["OK-ACCESS-SIGN"] == base64.b64encode(digest).decode()
        assert not expiry.cancels_expire
        with expiry.bound(MONO0 + 3.0, carried=expiry.cancels_expire):
            await client.cancel_order("", "ETH/USDT", {"clOrdId": "qmx1"})
        url, _, headers, _ = client.fetch.last("/trade/cancel-order")
        assert "expTime" not in headers
        await client.create_order("ETH/USDT", "limit", "buy", 0.01, 1500, {"clOrdId": "qmx2"})
        assert "expTime" not in client.fetch.last("/trade/")[2]  # no expiry asked for
    finally:
        await client.close()


BYBIT_INSTRUMENT = {
    "symbol": "ETHUSDT", "baseCoin": "ETH", "quoteCoin": "USDT", "innovation": "0",
    "status": "Trading", "marginTrading": "both",
    "lotSizeFilter": {"basePrecision": "0.00001", "quotePrecision": "0.0000001",
                      "minOrderQty": "0.0001", "maxOrderQty": "1000", "minOrderAmt": "1",
                      "maxOrderAmt": "2000000"},
    "priceFilter": {"tickSize": "0.01"},
}  # fmt: skip


def bybit_answers(url: str, method: str) -> Any:
    if "instruments-info" in url:
        return {"retCode": 0, "result": {"category": "spot", "list": [BYBIT_INSTRUMENT]}}
    if "query-api" in url:
        return {"retCode": 0, "result": {"unified": 1, "uta": 1}}
    if "account/info" in url:
        return {"retCode": 0, "result": {"unifiedMarginStatus": 5}}
    return {"retCode": 0, "retMsg": "OK", "result": {"orderId": "7", "orderLinkId": "qm.a"}}


async def test_bybit_signs_timestamp_and_recv_window_headers_on_creates_and_cancels() -> None:
    client = ccxt_async.bybit({"apiKey": "key", "secret": "secret"})
    try:
        client.fetch = Recorder(bybit_answers)
        client.set_markets(await client.fetch_spot_markets({}))
        mono = FakeClock(MONO0)
        expiry = expiring(client, mono)
        wire = wire_expiry(MONO0 + 4.0, MONO0, expiry._clock.sample, MARGINS)
        for call, path in (
            (client.create_order("ETH/USDT", "limit", "buy", 0.01, 1500, {}), "order/create"),
            (client.cancel_order("7", "ETH/USDT"), "order/cancel"),
        ):
            with expiry.bound(MONO0 + 4.0):
                await call
            _, method, headers, body = client.fetch.last(path)
            assert method == "POST"
            assert headers["X-BAPI-TIMESTAMP"] == str(wire.stamp_ms), path
            assert headers["X-BAPI-RECV-WINDOW"] == str(wire.window_ms), path
            signed = f"{wire.stamp_ms}key{wire.window_ms}{body}"
            assert (
                headers["X-BAPI-SIGN"]
                == hmac.new(b"secret", signed.encode(), hashlib.sha256).hexdigest()
            )
        # the preliminary account reads went with ccxt's own window, and it is restored
        assert client.fetch.last("account/info")[2]["X-BAPI-RECV-WINDOW"] == "5000"
        assert client.options["recvWindow"] == 5000 and "nonce" not in vars(client)
        assert expiry.cancels_expire
    finally:
        await client.close()


async def test_an_exchange_without_a_mechanism_is_checked_before_sending_only() -> None:
    client = ccxt_async.kraken({"apiKey": "key", "secret": base64.b64encode(b"s").decode()})
    try:
        sign = client.sign
        mono = FakeClock(MONO0)
        expiry = RequestExpiry(client, ExchangeClock(client, mono=mono), MARGINS, mono=mono)
        assert not expiry.enforced and client.sign == sign  # not wrapped
        entered = False
        with expiry.bound(MONO0 + 1.0):  # no clock needed: only the lease's time is checked
            entered = True
        assert entered
        with pytest.raises(RequestExpired), expiry.bound(MONO0 + 0.06):
            raise AssertionError("a request was let through with too little lease left")
    finally:
        await client.close()


# -- measuring the clock ----------------------------------------------------------------------


class TimeServer:
    """A client whose ``fetch_time`` answers the exchange's clock after scripted delays."""

    id = "binance"
    has: dict[str, bool] = {"fetchTime": True}  # noqa: RUF012 - mirrors ccxt's class attribute

    def __init__(self, mono: FakeClock, delays: list[float], offset: float) -> None:
        self.mono = mono
        self.delays = delays
        self.offset = offset
        self.options: dict[str, Any] = {"timeDifference": 0}

    async def fetch_time(self) -> int:
        delay = self.delays.pop(0)
        if delay < 0:
            raise ccxt.RequestTimeout("binance GET /api/v3/time timed out")
        self.mono.now += delay / 2
        answer = round((self.mono.now + self.offset) * 1000)
        self.mono.now += delay / 2
        return answer


async def test_the_best_of_several_readings_is_kept_and_handed_to_ccxt() -> None:
    mono = FakeClock(100.0)
    wall_minus_mono = 1_700_000_000.0
    server = TimeServer(mono, [0.080, 0.004, 0.030], offset=wall_minus_mono + 0.250)
    clock = ExchangeClock(server, mono=mono, wall=lambda: mono.now + wall_minus_mono)
    assert clock.available and await clock.measure(3)
    s = clock.sample
    assert s is not None and s.uncertainty == pytest.approx(0.002)
    assert s.offset_wall == pytest.approx(0.250, abs=0.001)
    assert server.options["timeDifference"] == -250  # ccxt: local - exchange, in ms
    public = s.public()
    assert public.offset == pytest.approx(0.25, abs=0.001)


async def test_a_failed_measurement_keeps_the_previous_one_and_is_logged_once() -> None:
    mono = FakeClock(100.0)
    server = TimeServer(mono, [0.004, -1, -1, 0.002], offset=10.0)
    clock = ExchangeClock(server, mono=mono, wall=lambda: mono.now)
    assert await clock.measure()
    first = clock.sample
    with structlog.testing.capture_logs() as logs:
        assert not await clock.measure()
        assert not await clock.measure()
    assert clock.sample is first
    failures = [e for e in logs if e["event"] == "exchange_clock_unmeasured"]
    assert len(failures) == 1 and "timed out" in failures[0]["error"]
    assert await clock.measure() and clock.sample is not first


def test_a_fake_client_without_fetch_time_has_no_clock() -> None:
    class Bare:
        id = "binance"
        has: dict[str, bool] = {}  # noqa: RUF012 - mirrors ccxt's class attribute

    assert not ExchangeClock(Bare()).available
