"""Rendering settings back to YAML with secrets masked (``quantmesh.config.render``)."""

from __future__ import annotations

import pytest

from quantmesh.config import load_settings, parse_settings, render_effective

from .support import MINIMAL, REPO, SYMBOLS_OK, parse

SECRETFUL = (
    """
exchange:
  name: binance
  api_key: APIKEY-111
  secret: SECRET-222
  password: PASSPHRASE-333
  options: {apiKey: OPTKEY-444, defaultType: spot}
database:
  type: postgres
  dsn: postgresql+asyncpg://quantmesh:DBPASS-555@db.example:5432/quantmesh
redis:
  url: redis://default:REDISURL-666@redis.example:6379/0
  password: REDISPASS-777
"""
    + SYMBOLS_OK
)


SECRETS = [
    "APIKEY-111",
    "SECRET-222",
    "PASSPHRASE-333",
    "OPTKEY-444",
    "DBPASS-555",
    "REDISURL-666",
    "REDISPASS-777",
]


def test_render_effective_masks_every_secret() -> None:
    s = parse(SECRETFUL)
    out = render_effective(s)
    for secret in SECRETS:
        assert secret not in out
        assert secret not in repr(s)
        assert secret not in str(s)
    assert "dsn: postgresql+asyncpg://quantmesh:***@db.example:5432/quantmesh" in out
    assert "url: redis://default:***@redis.example:6379/0" in out
    assert "api_key: '***'" in out
    assert "defaultType: spot" in out


@pytest.mark.parametrize(
    "dsn",
    [
        "host=localhost user=quantmesh password=DBPASS-555 dbname=quantmesh",
        "quantmesh:DBPASS-555@tcp(localhost:3306)/quantmesh?charset=utf8mb4",
    ],
)
def test_render_effective_masks_go_style_dsns(dsn: str) -> None:
    kind = "postgres" if dsn.startswith("host") else "mysql"
    s = parse(SYMBOLS_OK + f"database:\n  type: {kind}\n  dsn: '{dsn}'\n")
    out = render_effective(s)
    assert "DBPASS-555" not in out
    assert dsn.replace("DBPASS-555", "***") in out


def test_render_effective_round_trips() -> None:
    s = load_settings(REPO / "config" / "config.yaml", env={})
    out = render_effective(s)
    assert parse_settings(out, env={}) == s
    assert "price_interval: 5\n" in out
    assert "volatility: 0.001\n" in out


def test_render_effective_shows_every_section() -> None:
    out = render_effective(parse(MINIMAL))
    top = [line.split(":")[0] for line in out.splitlines() if line and not line[0].isspace()]
    assert top == [
        "instance",
        "exchange",
        "trading",
        "database",
        "distributed_lock",
        "coordination",
        "redis",
        "etcd",
        "logging",
        "http",
        "notifications",
        "risk",
    ]


def test_render_effective_masks_the_etcd_password_and_keeps_the_endpoints() -> None:
    s = parse(
        SYMBOLS_OK + "distributed_lock: {enabled: true, type: etcd}\n"
        "etcd: {endpoints: ['10.0.0.1:2379', 'https://etcd-2:2379/'], username: qm, "
        "password: ETCDPASS-777}\n"
    )
    out = render_effective(s)
    assert "ETCDPASS-777" not in out
    assert parse_settings(out, env={}).etcd.endpoints == s.etcd.endpoints
    assert s.etcd.endpoints == ("http://10.0.0.1:2379", "https://etcd-2:2379")
