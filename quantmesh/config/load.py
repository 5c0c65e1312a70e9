"""Loading settings: YAML text or a file -> validated, frozen ``Settings``.

``load_settings(path)`` reads the file, expands ``${VAR}`` / ``${VAR:-default}`` in string
values, validates everything and raises ``ConfigError`` with one line per problem, each
starting with the YAML path. Prices and amounts are ``Decimal`` (YAML floats go through
``str()``, so ``0.1`` stays ``Decimal("0.1")``); durations are seconds as ``float``.
Secrets are ``SecretStr``: read them with ``.get_secret_value()``.

``config_warnings(settings)`` lists what is valid but risky, one line per warning in the
same ``path: message`` form; ``check-config`` prints them to stderr (``warning: ...``)
and still exits 0, ``run`` logs them at start.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quantmesh.config.problems import validation_problems
from quantmesh.config.render import render_settings
from quantmesh.config.schema import Settings
from quantmesh.config.source import load_mapping, read_config_file
from quantmesh.errors import ConfigError

__all__ = ["config_warnings", "load_settings", "parse_settings", "render_effective"]


def _apply_env_defaults(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """``instance.id`` defaults to $INSTANCE_ID when the file does not set it."""
    instance = data.get("instance") or {}
    if isinstance(instance, dict) and "id" not in instance and env.get("INSTANCE_ID"):
        data["instance"] = {**instance, "id": env["INSTANCE_ID"]}


def parse_settings(
    text: str, env: Mapping[str, str] | None = None, source: str = "<string>"
) -> Settings:
    """Validate YAML text into Settings; raises ConfigError with every problem found."""
    environ: Mapping[str, str] = os.environ if env is None else env
    data = load_mapping(text, environ, source)
    if data is None:
        raise ConfigError([f"{source}: the configuration is empty (trading.symbols is required)"])
    _apply_env_defaults(data, environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, Settings)) from None


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a YAML config file; raises ConfigError."""
    return parse_settings(read_config_file(path), env, source=str(path))


def render_effective(settings: Settings) -> str:
    """The effective settings as YAML, with every secret masked."""
    return render_settings(settings)


def config_warnings(settings: Settings) -> list[str]:
    """Valid settings that carry a risk worth a line each: ``path: what and why``."""
    warnings: list[str] = []
    http = settings.http
    if http.enabled and not _loopback(http.host) and not http.token.get_secret_value():
        warnings.append(
            f"http.host: {http.host} is not a loopback address and http.token is empty: "
            "/api/status is readable by anyone who reaches it, and state-changing endpoints "
            "are refused; set http.token (e.g. ${QUANTMESH_HTTP_TOKEN}) or bind to 127.0.0.1"
        )
    name = settings.exchange.name
    if settings.distributed_lock.enabled and name != "simulated":
        from quantmesh.exchange.ccxt import expiry

        if expiry.expiry_mechanism(name) is None:
            warnings.append(
                f"exchange.name: {name} requests carry no expiry the exchange enforces, "
                "and with distributed_lock.enabled a symbol can move to another instance: "
                "a request delayed past its ownership lease (a frozen process, a slow "
                "network) may still execute there after another instance took the symbol "
                "over"
            )
    return warnings


def _loopback(host: str) -> bool:
    """Whether ``host`` (an ``http.host``) is reachable from this machine only."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
