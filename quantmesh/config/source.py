"""Reading the YAML text of a config: syntax, duplicate keys, ``${VAR}`` interpolation.

The one reader of every YAML file QuantMesh takes: the daemon's settings and the
``quantmesh sim-exchange`` file. ``read_config_file`` and ``load_mapping`` raise
``ConfigError``; the steps below them return problems as lines starting with a YAML path
(see ``format_path``) instead of raising, so one run reports everything wrong at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from quantmesh.errors import ConfigError

Loc = tuple[str | int, ...]

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_\-]+")
# ``$${`` (escape), ``${...}`` (a reference), or an unterminated ``${``.
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def format_path(loc: Loc) -> str:
    """``("trading", "symbols", 0, "price_interval")`` -> ``trading.symbols[0].price_interval``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader; kept separate so nothing registered here leaks into yaml.SafeLoader."""


def _duplicate_keys(node: yaml.Node, loc: Loc, problems: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            child: Loc = (*loc, str(key))
            if key is not None:
                if key in seen:
                    problems.append(
                        f"{format_path(child)}: duplicate key (line {key_node.start_mark.line + 1}"
                        f" repeats the one on line {seen[key]})"
                    )
                else:
                    seen[key] = key_node.start_mark.line + 1
            _duplicate_keys(value_node, child, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(item, (*loc, index), problems)


def parse_yaml(text: str, source: str) -> tuple[Any, list[str]]:
    """Parse one YAML document; returns (data, problems)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        problems: list[str] = []
        _duplicate_keys(node, (), problems)
        if problems:
            return None, problems
        return loader.construct_document(node), []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = ", ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
        return None, [f"{source}: {where}invalid YAML: {what}"]
    except yaml.YAMLError as exc:
        return None, [f"{source}: invalid YAML: {exc}"]
    finally:
        loader.dispose()


def _interpolate_string(value: str, loc: Loc, env: Mapping[str, str], problems: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group(1)
        parsed = _BODY.fullmatch(body) if body is not None else None
        if parsed is None:
            problems.append(
                f"{format_path(loc)}: malformed variable reference {match.group(0)!r}"
                " (write ${NAME} or ${NAME:-default}; $${ for a literal ${)"
            )
            return ""
        name, default = parsed.group(1), parsed.group(2)
        current = env.get(name)
        if current:
            return current
        if default is not None:
            return default
        if current is not None:
            return current  # set but empty, and no default: empty is what was asked for
        problems.append(
            f"{format_path(loc)}: environment variable {name} is not set"
            f" (export it or use ${{{name}:-default}})"
        )
        return ""

    return _REFERENCE.sub(replace, value)


def interpolate(data: Any, env: Mapping[str, str], loc: Loc = ()) -> tuple[Any, list[str]]:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string scalar (not in keys).

    ``${VAR:-default}`` uses the default when VAR is unset or empty, as in the shell;
    ``$${`` stands for a literal ``${``. Returns (new data, problems).
    """
    problems: list[str] = []

    def walk(node: Any, here: Loc) -> Any:
        if isinstance(node, str):
            return _interpolate_string(node, here, env, problems)
        if isinstance(node, dict):
            return {key: walk(value, (*here, str(key))) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item, (*here, index)) for index, item in enumerate(node)]
        return node

    return walk(data, loc), problems


def read_config_file(path: str | Path) -> str:
    """The text of a config file; ``ConfigError`` (one line) when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from None


def load_mapping(text: str, env: Mapping[str, str], source: str) -> dict[str, Any] | None:
    """The top-level mapping of a YAML document, ``${VAR}`` expanded from ``env``; ``None``
    for an empty document. ``ConfigError`` with every problem: invalid YAML, a duplicate
    key, a top level that is not a mapping, a variable that is not set."""
    data, problems = parse_yaml(text, source)
    if problems:
        raise ConfigError(problems)
    if data is None:
        return None
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({data!r:.40})"
        raise ConfigError([f"{source}: the top level must be a mapping of sections, not {kind}"])
    data, problems = interpolate(data, env)
    if problems:
        raise ConfigError(problems)
    mapping: dict[str, Any] = data
    return mapping
