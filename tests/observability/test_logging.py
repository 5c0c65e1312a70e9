"""Log redaction: structlog events and the standard ``logging`` records of libraries (ccxt,
aiohttp) go through the same redactor; short secrets are hidden where they stand as
credentials, without hiding the same characters in unrelated text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from quantmesh.observability.logging import SecretRedactor, configure_logging
from quantmesh.secrets import CredentialMask, is_credential_field

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
PASSWORD = "pw"  # shorter than 4: hidden where it stands as a credential
SHORT_KEY = "k1"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Logging configured as the daemon does, into a buffer; undone afterwards."""
    out = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    configure_logging("info", "json", [API_KEY, SECRET, PASSWORD, SHORT_KEY], stream=out)
    try:
        yield out
    finally:
        for handler in [h for h in root.handlers if h not in before[0]]:
            root.removeHandler(handler)
        root.setLevel(before[1])
        structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_ccxt_and_aiohttp_records_are_redacted(logs: io.StringIO) -> None:
    ccxt_log = logging.getLogger("ccxt.base.exchange")
    ccxt_log.warning(
        "GET https://api.binance.com/api/v3/account?apiKey=%s&signature=x failed, secret %s",
        API_KEY,
        SECRET,
    )
    logging.getLogger("aiohttp.client").error(
        "request headers %s", {"X-MBX-APIKEY": API_KEY, "password": PASSWORD}
    )
    try:
        raise ConnectionError(f"redis://:{PASSWORD}@cache:6379 refused; key {API_KEY}")
    except ConnectionError:
        logging.getLogger("ccxt").exception("connection failed")
    logging.getLogger("aiohttp.access").info("below the level of libraries: not printed")

    text = logs.getvalue()
    for secret in (API_KEY, SECRET, f":{PASSWORD}@", f"'{PASSWORD}'"):
        assert secret not in text
    records = lines(logs)
    assert [(r["logger"], r["level"]) for r in records] == [
        ("ccxt.base.exchange", "warning"),
        ("aiohttp.client", "error"),
        ("ccxt", "error"),
    ]
    assert records[0]["event"] == (
        "GET https://api.binance.com/api/v3/account?apiKey=***&signature=x failed, secret ***"
    )
    assert records[1]["event"] == "request headers {'X-MBX-APIKEY': '***', 'password': '***'}"
    assert records[2]["event"] == "connection failed"
    assert "redis://:***@cache:6379 refused; key ***" in records[2]["exception"]
    assert all("timestamp" in r for r in records)


def test_structlog_events_hide_short_secrets_where_they_are_credentials(
    logs: io.StringIO,
) -> None:
    log = structlog.get_logger("quantmesh.test")
    log.info(
        "connecting",
        api_key=SHORT_KEY,
        dsn=f"postgresql://quantmesh:{PASSWORD}@db/quantmesh",
        headers={"X-MBX-APIKEY": SHORT_KEY},
        query=f"symbol=ETHUSDT&apiKey={SHORT_KEY}&timestamp=1",
        auth=f"Authorization: Bearer {PASSWORD}",
        # the same characters in unrelated text stay
        note="pwd_check k1x ok, pw and k1 are words here",
        symbol="K1/USDT",
        level_index=SHORT_KEY,
    )
    (event,) = lines(logs)
    assert event["api_key"] == "***"
    assert event["dsn"] == "postgresql://quantmesh:***@db/quantmesh"
    assert event["headers"] == {"X-MBX-APIKEY": "***"}
    assert event["query"] == "symbol=ETHUSDT&apiKey=***&timestamp=1"
    assert event["auth"] == "Authorization: Bearer ***"
    assert event["note"] == "pwd_check k1x ok, pw and k1 are words here"
    assert event["symbol"] == "K1/USDT" and event["level_index"] == SHORT_KEY


def test_a_second_configuration_replaces_the_first(logs: io.StringIO) -> None:
    second = io.StringIO()
    configure_logging("error", "json", [API_KEY], stream=second)
    logging.getLogger("ccxt").warning("below error now")
    logging.getLogger("ccxt").error("once, key %s", API_KEY)
    assert logs.getvalue() == ""
    assert [r["event"] for r in lines(second)] == ["once, key ***"]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("password=pw", "password=***"),
        ("password=pwx", "password=pwx"),
        ("sslpassword = 'pw'", "sslpassword = '***'"),
        ('{"secret": "pw", "n": 1}', '{"secret": "***", "n": 1}'),
        ("passphrase: pw.", "passphrase: ***."),
        ("Bearer pw", "Bearer ***"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("mysql://u:pw@h/db", "mysql://u:***@h/db"),
        ("u:pw@tcp(h:3306)/db", "u:***@tcp(h:3306)/db"),
        ("pw pwd lpw=pw https://h/pw@x key=pw", "pw pwd lpw=pw https://h/pw@x key=pw"),
    ],
)
def test_credential_mask(text: str, masked: str) -> None:
    assert CredentialMask(["pw"])(text) == masked


def test_credential_field_names() -> None:
    for name in ("password", "api_key", "apiKey", "X-MBX-APIKEY", "secret", "http_token"):
        assert is_credential_field(name), name
    for name in ("key", "symbol", "event", "pwned_count"):
        assert not is_credential_field(name), name


def test_long_secrets_are_replaced_anywhere() -> None:
    redact = SecretRedactor([API_KEY, "", "pw"])
    event = redact(None, "info", {"event": f"x{API_KEY}y", "n": [f"{API_KEY}", 3]})
    assert event == {"event": "x***y", "n": ["***", 3]}
