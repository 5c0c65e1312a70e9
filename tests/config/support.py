"""What the settings tests share: a minimal config and parsing helpers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from quantmesh.config import Settings, parse_settings
from quantmesh.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


MINIMAL = """
trading:
  symbols:
    - symbol: ETHUSDT
      price_interval: 1
"""


def parse(text: str, env: dict[str, str] | None = None) -> Settings:
    return parse_settings(textwrap.dedent(text), env={} if env is None else env)


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    assert str(caught.value) == "; ".join(caught.value.problems)
    return caught.value.problems


def with_symbol(**fields: object) -> str:
    """MINIMAL with extra keys on the first symbol (values written as YAML flow)."""
    extra = "".join(f"      {key}: {value}\n" for key, value in fields.items())
    return MINIMAL + extra


DATABASES = {
    "sqlite": "database: {type: sqlite, dsn: ./data/quantmesh.db}\n",
    "postgres": "database: {type: postgres, dsn: 'host=db user=quantmesh dbname=quantmesh'}\n",
}


SYMBOLS_OK = "trading:\n  symbols:\n    - {symbol: ETHUSDT, price_interval: 1}\n"
