"""Rendering settings back to YAML with secrets masked (``quantmesh check-config``)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr

from quantmesh.secrets import MASK, mask_dsn

# Keys whose SecretStr value is a connection string: show it with only the password masked.
_DSN_KEYS = frozenset({"dsn", "url"})
# Keys inside free-form mappings (exchange options/urls) whose values are hidden entirely.
_SECRET_NAME = re.compile(r"(?i)secret|passw|passphrase|token|api_?key|private_?key|auth")


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        """Every value written out where it is, never as ``&id001``/``*id001`` (defaults
        shared between symbols are one object)."""
        return True


def _represent_decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.ScalarNode:
    text = format(value, "f")
    kind = "float" if "." in text else "int"  # format "f" never uses an exponent
    return dumper.represent_scalar(f"tag:yaml.org,2002:{kind}", text)


_Dumper.add_representer(Decimal, _represent_decimal)


def _plain(value: Any, key: str | None) -> Any:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        if key in _DSN_KEYS:
            return mask_dsn(secret)
        return MASK if secret else ""
    if isinstance(value, dict):
        return {
            str(k): (MASK if isinstance(k, str) and _SECRET_NAME.search(k) and v else _plain(v, k))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_plain(item, None) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def render_settings(settings: BaseModel) -> str:
    """YAML of every effective value; secrets masked, the rest reloadable as written."""
    data = _plain(settings.model_dump(mode="python"), None)
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return text
