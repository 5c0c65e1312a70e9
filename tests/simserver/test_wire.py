"""The simulator's pure parts: Binance signatures, timestamps, rejections, faults."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from quantmesh.errors import InvalidOrder
from quantmesh.simserver import binance as wire
from quantmesh.simserver.binance import ApiError
from quantmesh.simserver.faults import FaultDice, Faults


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


def test_ws_signature_is_over_sorted_params() -> None:
    params = {"timestamp": 5, "apiKey": "k"}
    signed = {**params, "signature": wire.sign("s", urlencode(sorted(params.items())))}
    wire.check_ws_signature("s", signed)
    with pytest.raises(ApiError):
        wire.check_ws_signature("t", signed)


def test_timestamp_outside_recv_window_is_refused() -> None:
    wire.check_timestamp({"timestamp": "10000"}, 12000)
    for params in ({"timestamp": "1000"}, {"timestamp": "20000"}, {}):
        with pytest.raises(ApiError):
            wire.check_timestamp(params, 12000)
    with pytest.raises(ApiError):
        wire.check_timestamp({"timestamp": "10000", "recvWindow": "70000"}, 12000)


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
