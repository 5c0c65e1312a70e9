"""The simulator's pure parts: Binance signatures, timestamps, rejections, faults."""

from __future__ import annotations

import pytest

from quantmesh.errors import InvalidOrder
from quantmesh.exchange.sim.server import binance as wire
from quantmesh.exchange.sim.server.binance import ApiError
from quantmesh.exchange.sim.server.faults import FaultDice, Faults


def test_signature_over_query_and_body() -> None:
    query = "symbol=ETHUSDT&timestamp=1"
    body = "side=BUY&price=1"
    good = wire.sign("s3cret", query + body)
    wire.check_signature("s3cret", query, f"{body}&signature={good}")
    with pytest.raises(ApiError) as caught:
        wire.check_signature("other", query, f"{body}&signature={good}")
    assert caught.value.code == -1022
    with pytest.raises(ApiError, match="signature"):
        wire.check_signature("s3cret", query, body)


def test_ws_signature_is_over_sorted_raw_params() -> None:
    params = {"timestamp": 5, "apiKey": "k", "test": True, "note": "a b"}
    payload = "apiKey=k&note=a b&test=true&timestamp=5"  # sorted, raw, booleans lower case
    signed = {**params, "signature": wire.sign("s", payload)}
    wire.check_ws_signature("s", signed)
    with pytest.raises(ApiError) as caught:
        wire.check_ws_signature("t", signed)
    assert caught.value.code == -1022
    with pytest.raises(ApiError, match="signature"):
        wire.check_ws_signature("s", params)
    assert wire.ws_params(params) == {
        "timestamp": "5",
        "apiKey": "k",
        "test": "true",
        "note": "a b",
    }


def expired(params: dict[str, str], now_us: int) -> int | None:
    """The error code ``check_timestamp`` answers with, None when accepted."""
    try:
        wire.check_timestamp(params, now_us)
    except ApiError as exc:
        return exc.code
    return None


def test_timestamp_outside_recv_window_is_refused() -> None:
    now = 12_000_000  # server clock, microseconds: 12000 ms
    assert expired({"timestamp": "10000"}, now) is None
    assert expired({"timestamp": "7000"}, now) is None  # exactly the 5000 ms default window
    assert expired({"timestamp": "7000"}, now + 1) == -1021  # 1 us past it: refused
    assert expired({"timestamp": "13000"}, now) is None  # 1000 ms ahead: accepted
    assert expired({"timestamp": "13001"}, now) == -1021  # further ahead: refused
    assert expired({"timestamp": "1000", "recvWindow": "11000"}, now) is None
    assert expired({"timestamp": "1000", "recvWindow": "10999"}, now) == -1021
    assert expired({}, now) == -1102
    assert expired({"timestamp": "12e3"}, now) == -1100
    assert expired({"timestamp": "-1"}, now) == -1100
    assert expired({"timestamp": "10000", "recvWindow": "60001"}, now) == -1131
    assert expired({"timestamp": "10000", "recvWindow": "0"}, now) == -1131
    assert expired({"timestamp": "10000", "recvWindow": "60000"}, now) is None


def test_recv_window_takes_up_to_three_decimals() -> None:
    now = 12_000_000
    # 1.5 ms: 1500 us after the timestamp is inside, 1501 us is not
    assert expired({"timestamp": "12000", "recvWindow": "1.5"}, now + 1500) is None
    assert expired({"timestamp": "12000", "recvWindow": "1.5"}, now + 1501) == -1021
    assert expired({"timestamp": "12000", "recvWindow": "5000.125"}, now) is None
    assert expired({"timestamp": "12000", "recvWindow": "60000.000"}, now) is None
    assert expired({"timestamp": "12000", "recvWindow": "60000.001"}, now) == -1131
    for bad in ("5000.1234", "5000.", ".5", "1e3", "-5", " 5000"):
        assert expired({"timestamp": "12000", "recvWindow": bad}, now) == -1100, bad


@pytest.mark.parametrize(
    ("message", "code", "text"),
    [
        ("price 1.001 is not a multiple of tick size 0.01", -1013, "PRICE_FILTER"),
        ("amount 0.00001 is not a multiple of lot size 0.0001", -1013, "LOT_SIZE"),
        ("notional 1 is below the minimum notional 5", -1013, "NOTIONAL"),
        ("client order id 'x y' must be 1-36 characters", -1100, "newClientOrderId"),
    ],
)
def test_rejections_name_the_binance_filter(message: str, code: int, text: str) -> None:
    error = wire.rejection(InvalidOrder(message))
    assert error.code == code and text in error.msg


def test_faults_validate_and_update() -> None:
    faults = Faults().updated({"error_rate": 0.5, "retry_after": 2})
    assert faults.error_rate == 0.5 and faults.retry_after == 2
    with pytest.raises(ValueError, match="unknown"):
        faults.updated({"nonsense": 1})
    with pytest.raises(ValueError):
        Faults(error_rate=2)
    with pytest.raises(ValueError):
        Faults(latency=-1)


def test_fault_dice_follow_the_rates() -> None:
    dice = FaultDice(Faults(error_rate=0.5, rate_limit_rate=0.25), seed=1)
    outcomes = [dice.call() for _ in range(2000)]
    assert 900 < outcomes.count("server_error") < 1100
    assert 400 < outcomes.count("rate_limited") < 600
    assert FaultDice(Faults(), seed=1).call() == "ok"
