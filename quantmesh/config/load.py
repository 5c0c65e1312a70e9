"""Loading settings: YAML text or a file -> validated, frozen ``Settings``.

``load_settings(path)`` reads the file, expands ``${VAR}`` / ``${VAR:-default}`` in string
values, validates everything and raises ``ConfigError`` with one line per problem, each
starting with the YAML path. Prices and amounts are ``Decimal`` (YAML floats go through
``str()``, so ``0.1`` stays ``Decimal("0.1")``); durations are seconds as ``float``.
Secrets are ``SecretStr``: read them with ``.get_secret_value()``.

What is valid but risky is ``quantmesh.preflight``'s business (``config_warnings``).
"""

from __future__ import annotations

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

__all__ = ["load_settings", "parse_settings", "render_effective"]


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
