"""Turning pydantic validation errors into one humane line per problem.

Each line starts with the YAML path of the offending value:
``trading.symbols[0].price_interval: must be greater than 0``.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from quantmesh.config.source import Loc, format_path

# Values of these keys are never echoed back in an error message.
SECRET_KEYS = frozenset(
    {"api_key", "secret", "password", "passphrase", "token", "dsn", "url", "webhook_url"}
)

# Extra advice for required values, by YAML path with list indices as [*].
_MISSING_HINTS = {
    "trading": "required: list the symbols to trade under trading.symbols",
    "trading.symbols": "required: list at least one symbol",
    "trading.symbols[*].symbol": "required (e.g. symbol: ETHUSDT)",
}


class FieldProblems(ValueError):
    """Raised by model validators to report problems at paths below the model."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{format_path(loc)}: {msg}" for loc, msg in self.problems))


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    import difflib  # here: only a bad file needs it

    options = list(choices)
    lowered = {choice.lower(): choice for choice in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown)
    if isinstance(value, int | float | Decimal):
        return str(value)
    return type(value).__name__


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional from a type annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc``, if there is one."""
    current: Any = root
    parts = list(loc)
    while parts:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(parts.pop(0)))
            if field is None:
                return None
            current = field.annotation
        elif origin in (dict, list, tuple):
            parts.pop(0)
            current = typing.get_args(current)[-1 if origin is dict else 0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _wildcard(loc: Loc) -> str:
    return re.sub(r"\[\d+\]", "[*]", format_path(loc))


_SIMPLE = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number, without a fractional part",
    "decimal_type": "must be a number",
    "decimal_parsing": "must be a number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _message(error: ErrorDetails, loc: Loc, root: type[BaseModel]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    secret = any(isinstance(part, str) and part in SECRET_KEYS for part in loc)
    got = "" if secret else f" (got {_describe(value)})"
    if kind in _SIMPLE:
        return _SIMPLE[kind] + got
    if kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        limit = re.sub(r"^Decimal\('(.*)'\)$", r"\1", str(ctx[bound]))  # pydantic's repr
        return f"must be {words} {limit}{got}"
    if kind == "missing":
        return _MISSING_HINTS.get(_wildcard(loc), "required")
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        known = list(model.model_fields) if model else []
        return f"unknown key{suggest(str(loc[-1]), known)}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        hint = suggest(value, expected.split(", ")) if isinstance(value, str) else ""
        return f"must be one of {expected}{got}{hint}"
    if kind == "string_type":
        quote = "; put it in quotes" if isinstance(value, int | float) and not secret else ""
        return f"must be a string{got[:-1]}{quote})" if got else "must be a string"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    message = error["msg"]
    return message[:1].lower() + message[1:]


def validation_problems(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per error in ``exc``, each starting with the YAML path."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(part for part in error["loc"] if part != "[key]")
        is_key = len(loc) != len(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if error["type"] == "value_error" and isinstance(cause, FieldProblems):
            for sub_loc, message in cause.problems:
                lines.append(f"{format_path((*loc, *sub_loc)) or '<top level>'}: {message}")
            continue
        message = _message(error, loc, root)
        if is_key:
            message = f"key {message}"
        lines.append(f"{format_path(loc) or '<top level>'}: {message}")
    return lines
