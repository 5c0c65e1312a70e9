"""Reading the YAML text (``quantmesh.config.source``): ``${VAR}`` interpolation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quantmesh.config import parse_settings

from .support import MINIMAL, SYMBOLS_OK, parse, problems_of, with_symbol


def test_interpolation_uses_the_variable() -> None:
    s = parse(
        MINIMAL + "database:\n  type: postgres\n  dsn: 'host=db password=${DB_PASSWORD}'\n",
        env={"DB_PASSWORD": "s3cret"},
    )
    assert s.database.dsn.get_secret_value() == "host=db password=s3cret"


def test_interpolation_default_when_unset_or_empty() -> None:
    text = MINIMAL + "http:\n  port: ${PORT:-9200}\n  host: '${HOST:-0.0.0.0}'\n"
    assert parse(text).http.port == 9200
    assert parse(text, env={"PORT": ""}).http.port == 9200
    s = parse(text, env={"PORT": "9300", "HOST": "::1"})
    assert (s.http.port, s.http.host) == (9300, "::1")


def test_interpolation_of_a_set_but_empty_variable_without_default_is_empty() -> None:
    s = parse(MINIMAL + "exchange:\n  api_key: '${KEY}'\n", env={"KEY": ""})
    assert s.exchange.api_key.get_secret_value() == ""


def test_interpolation_escape_and_several_references() -> None:
    s = parse(
        MINIMAL + "distributed_lock:\n  key_prefix: '$${A}-${A}-${B:-b}-$$x'\n", env={"A": "a"}
    )
    assert s.distributed_lock.key_prefix == "${A}-a-b-$$x"


def test_interpolated_numbers_stay_exact() -> None:
    text = with_symbol(order_quantity="${QTY}", min_order_value=0)
    s = parse(text, env={"QTY": "0.30000000000000001"})
    assert s.symbols[0].order_quantity == Decimal("0.30000000000000001")


def test_interpolation_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_TEST_HOST", "10.1.2.3")
    s = parse_settings(MINIMAL + "http:\n  host: ${QM_TEST_HOST}\n")
    assert s.http.host == "10.1.2.3"


def test_missing_env_vars_are_all_reported() -> None:
    text = SYMBOLS_OK + "database:\n  type: postgres\n  dsn: '${U}:${P}@tcp(h)/db'\n"
    assert [line.split(" (")[0] for line in problems_of(text)] == [
        "database.dsn: environment variable U is not set",
        "database.dsn: environment variable P is not set",
    ]
