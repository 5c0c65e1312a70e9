"""Configuration: YAML -> validated, frozen settings (pydantic).

- ``source``: reading the YAML text (syntax, duplicate keys) and ``${VAR}`` interpolation;
- ``schema``: the settings models, one per YAML section, and the checks on values; the
  ``risk`` and ``notifications`` sections in modules of their own, and ``fields``, the
  section base and the value types they all share;
- ``problems``: pydantic validation errors as one line per problem, by YAML path;
- ``render``: the effective settings back to YAML with every secret masked;
- ``load``: ``load_settings`` / ``parse_settings`` tie these together.

What is valid but risky (``config_warnings``) is in ``quantmesh.preflight``: it needs to
know other components' limits, and nothing here imports from above this package.

Callers import from here: ``from quantmesh.config import Settings, load_settings``.
"""

from quantmesh.config.load import load_settings, parse_settings, render_effective
from quantmesh.config.lock_servers import (
    DistributedLockSettings,
    LockTTLSettings,
    RedisSettings,
)
from quantmesh.config.schema import (
    QUOTE_CURRENCIES,
    DatabaseSettings,
    ExchangeSettings,
    FeedSettings,
    HttpSettings,
    InstanceSettings,
    LoggingSettings,
    Settings,
    SimulatedExchangeSettings,
    SimulatedMarketSettings,
    SymbolSettings,
    TradingSettings,
    normalise_symbol,
)
from quantmesh.errors import ConfigError

__all__ = [
    "QUOTE_CURRENCIES",
    "ConfigError",
    "DatabaseSettings",
    "DistributedLockSettings",
    "ExchangeSettings",
    "FeedSettings",
    "HttpSettings",
    "InstanceSettings",
    "LockTTLSettings",
    "LoggingSettings",
    "RedisSettings",
    "Settings",
    "SimulatedExchangeSettings",
    "SimulatedMarketSettings",
    "SymbolSettings",
    "TradingSettings",
    "load_settings",
    "normalise_symbol",
    "parse_settings",
    "render_effective",
]
