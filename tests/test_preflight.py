"""``quantmesh.preflight.config_warnings``: valid settings that carry a risk, one line each."""

from __future__ import annotations

import pytest

from quantmesh.config import load_settings
from quantmesh.preflight import config_warnings
from tests.config.support import DATABASES, MINIMAL, REPO, parse


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "quantmesh.example.com"])
def test_an_http_address_off_loopback_without_a_token_is_a_warning(host: str) -> None:
    s = parse(MINIMAL + f"http: {{host: '{host}'}}\n")
    assert config_warnings(s) == [
        (
            f"http.host: {host} is not a loopback address and http.token is empty: "
            "/api/status is readable by anyone who reaches it, and state-changing endpoints "
            "are refused; set http.token (e.g. ${QUANTMESH_HTTP_TOKEN}) or bind to 127.0.0.1"
        )
    ]


@pytest.mark.parametrize(
    "http",
    [
        "{host: 127.0.0.1}",
        "{host: 127.0.0.2}",
        "{host: localhost}",
        "{host: '::1'}",
        "{host: '[::1]'}",
        "{host: 0.0.0.0, token: s3cret}",
        "{host: 0.0.0.0, enabled: false}",
    ],
)
def test_http_on_loopback_or_with_a_token_or_off_is_no_warning(http: str) -> None:
    assert config_warnings(parse(MINIMAL + f"http: {http}\n")) == []


EXPIRY_WARNING = (
    "exchange.name: kraken requests carry no expiry the exchange enforces, and with "
    "distributed_lock.enabled a symbol can move to another instance: a request delayed past "
    "its ownership lease (a frozen process, a slow network) may still execute there after "
    "another instance took the symbol over"
)


def test_a_fleet_on_an_exchange_without_request_expiry_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from quantmesh.exchange.ccxt import expiry as ccxt_expiry

    asked: list[str] = []

    def unsupported(exchange_id: str) -> str | None:
        asked.append(exchange_id)
        return None

    monkeypatch.setattr(ccxt_expiry, "expiry_mechanism", unsupported)
    kraken = "exchange: {name: kraken}\n"
    fleet = "instance: {total: 2}\ndistributed_lock: {enabled: true}\n" + DATABASES["postgres"]
    assert config_warnings(parse(kraken + fleet + MINIMAL)) == [EXPIRY_WARNING]
    assert asked == ["kraken"]
    lone_with_lock = "distributed_lock: {enabled: true}\n"  # ownership can still move
    assert config_warnings(parse(kraken + lone_with_lock + MINIMAL)) == [EXPIRY_WARNING]
    assert config_warnings(parse(kraken + MINIMAL)) == []  # alone, no lock: nothing moves
    assert config_warnings(parse(fleet + MINIMAL)) == []  # the in-process simulator
    both = parse(kraken + fleet + MINIMAL + "http: {host: 0.0.0.0}\n")
    assert [w.split(":")[0] for w in config_warnings(both)] == ["http.host", "exchange.name"]


def test_an_exchange_whose_requests_expire_is_no_warning() -> None:
    fleet = "instance: {total: 2}\ndistributed_lock: {enabled: true}\n" + DATABASES["postgres"]
    assert config_warnings(parse("exchange: {name: binance}\n" + fleet + MINIMAL)) == []


def test_the_shipped_configs_have_no_warnings() -> None:
    env = {
        "INSTANCE_ID": "qm-1",
        "BINANCE_API_KEY": "k",
        "BINANCE_SECRET": "s",
        "BINANCE_API_SECRET": "s",
        "QM_SIM_API_KEY": "k",
        "QM_SIM_API_SECRET": "s",
        "EXCHANGE_API_KEY": "k",
        "EXCHANGE_SECRET": "s",
        "POSTGRES_PASSWORD": "p",
        "REDIS_PASSWORD": "r",
        "QUANTMESH_HTTP_TOKEN": "t",
    }
    paths = [
        *sorted((REPO / "config").glob("*.yaml")),
        REPO / "config-ha-example.yaml",
        *sorted((REPO / "deploy" / "compose").glob("quantmesh-*.yaml")),
    ]
    for path in paths:
        assert config_warnings(load_settings(path, env=env)) == [], path
