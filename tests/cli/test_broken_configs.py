"""Broken configurations, end to end: every one goes through ``check-config``, ``run``
and ``status`` in one parallel batch of real subprocesses, and is refused with one line
per problem, the exit code for a bad configuration, no traceback and nothing written."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .support import (
    CONFIG_NAME,
    DELETE,
    Result,
    assert_no_traceback,
    changed,
    fast_config,
    listing,
    run_cli,
    to_yaml,
    write_config,
)

# ---------------------------------------------------------------- broken configs


@dataclass(frozen=True)
class Broken:
    """A bad config and the start of each line its problems must produce, in any order."""

    id: str
    config: str | bytes
    expected: tuple[str, ...]


GOOD = fast_config()


def _bad(case_id: str, changes: dict[str, Any], *expected: str) -> Broken:
    return Broken(case_id, to_yaml(changed(GOOD, changes)), expected)


SYM = "trading.symbols[0]"
BROKEN = [
    Broken(
        "yaml-syntax",
        "trading:\n  symbols: [ {symbol: ETHUSDT\n",
        (f"{CONFIG_NAME}: line 3, column 1: invalid YAML",),
    ),
    Broken(
        "yaml-tab-indent",
        "trading:\n\tsymbols: []\n",
        (f"{CONFIG_NAME}: line 2, column 1: invalid YAML",),
    ),
    Broken(
        "yaml-duplicate-key",
        to_yaml(GOOD) + "trading:\n  shutdown_grace: 1\n",
        ("trading: duplicate key (line ",),
    ),
    Broken("empty-file", "# nothing here\n", (f"{CONFIG_NAME}: the configuration is empty",)),
    Broken(
        "top-level-list",
        "- symbol: ETHUSDT\n",
        (f"{CONFIG_NAME}: the top level must be a mapping",),
    ),
    Broken("not-utf8", b"trading:\n  symbols: [\xff\xfe]\n", (f"{CONFIG_NAME}: not UTF-8",)),
    _bad(
        "price-interval-zero",
        {"trading.symbols.0.price_interval": 0},
        f"{SYM}.price_interval: must be greater than 0",
    ),
    _bad(
        "price-interval-negative",
        {"trading.symbols.0.price_interval": -5},
        f"{SYM}.price_interval: must be greater than 0",
    ),
    _bad(
        "price-interval-text",
        {"trading.symbols.0.price_interval": "five"},
        f"{SYM}.price_interval: must be a number",
    ),
    _bad(
        "order-quantity-bool",
        {"trading.symbols.0.order_quantity": True},
        f"{SYM}.order_quantity: must be a number",
    ),
    _bad(
        "buy-window-zero",
        {"trading.symbols.0.buy_window_size": 0},
        f"{SYM}.buy_window_size: must be at least 1",
    ),
    _bad(
        "sell-window-fraction",
        {"trading.symbols.0.sell_window_size": 2.5},
        f"{SYM}.sell_window_size: must be a whole number",
    ),
    _bad(
        "two-problems-two-lines",
        {"trading.symbols.0.price_interval": 0, "trading.symbols.0.buy_window_size": 0},
        f"{SYM}.price_interval: must be greater than 0",
        f"{SYM}.buy_window_size: must be at least 1",
    ),
    _bad(
        "unknown-database-type",
        {"database.type": "oracle"},
        "database.type: must be one of sqlite, postgres, mysql",
    ),
    _bad(
        "unknown-exchange",
        {"exchange.name": "binanse"},
        "exchange.name: unknown exchange 'binanse' (did you mean 'binance'?)",
    ),
    _bad(
        "missing-env-var",
        {"exchange.api_key": "${QM_TEST_UNSET_VARIABLE}"},
        "exchange.api_key: environment variable QM_TEST_UNSET_VARIABLE is not set",
    ),
    _bad(
        "malformed-env-reference",
        {"exchange.api_key": "${not closed"},
        "exchange.api_key: malformed variable reference",
    ),
    _bad(
        "duplicate-symbol",
        {"trading.symbols.1": {"symbol": "ETH/USDT", "price_interval": 5}},
        "trading.symbols[1].symbol: duplicate of trading.symbols[0]",
    ),
    _bad(
        "unknown-key",
        {"trading.symbols.0.price_intervall": 5},
        f"{SYM}.price_intervall: unknown key (did you mean 'price_interval'?)",
    ),
    _bad(
        "unknown-section",
        {"tradng": {"symbols": []}, "trading": DELETE},
        "tradng: unknown key (did you mean 'trading'?)",
        "trading: required",
    ),
    _bad("empty-symbols", {"trading.symbols": []}, "trading.symbols: must not be empty"),
    _bad(
        "symbols-not-a-list",
        {"trading.symbols": {"symbol": "ETHUSDT"}},
        "trading.symbols: must be a list",
    ),
    _bad(
        "lower-above-upper",
        {"trading.symbols.0.lower_price": 2100, "trading.symbols.0.upper_price": 2000},
        f"{SYM}.lower_price: must be less than upper_price (2000)",
    ),
    _bad(
        "lower-equals-upper",
        {"trading.symbols.0.lower_price": 2000, "trading.symbols.0.upper_price": 2000},
        f"{SYM}.lower_price: must be less than upper_price (2000)",
    ),
    _bad(
        "unsplittable-symbol",
        {"trading.symbols.0.symbol": "ETH-USDT"},
        f"{SYM}.symbol: cannot split 'ETH-USDT'",
    ),
    _bad(
        "feed-interval-zero",
        {"exchange.simulated.markets.ETHUSDT.feed.interval": 0},
        "exchange.simulated.markets['ETH/USDT'].feed.interval: must be greater than 0",
    ),
    _bad(
        "dsn-scheme-mismatch",
        {"database.dsn": "postgresql://u:pw@h/db"},
        "database.dsn: URL scheme 'postgresql' does not match database.type 'sqlite'",
    ),
    _bad(
        "log-level-unknown",
        {"logging": {"level": "verbose"}},
        "logging.level: must be one of debug, info, warning, error",
    ),
    _bad(
        "standby-on-sqlite-with-local-fallback",
        {
            "instance.role": "standby",
            "distributed_lock": {"enabled": True, "fallback_mode": "single_instance"},
        },
        "distributed_lock.fallback_mode: must be halt: instance.role is standby, and "
        "single_instance is only safe when one instance runs",
        "database.type: must be postgres or mysql: instance.role is standby, and a SQLite "
        "file is not shared between instances",
    ),
]
COMMANDS = ["check-config", "run"]


def _argv(command: str) -> list[str]:
    return (
        ["check-config", CONFIG_NAME] if command == "check-config" else [command, "-c", CONFIG_NAME]
    )


@dataclass(frozen=True)
class BrokenOutcome:
    result: Result
    files: list[str]  # what the command left in its (otherwise empty) directory


@pytest.fixture(scope="module")
def broken_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BrokenOutcome]:
    """Every broken config through every command, run in parallel (they are independent)."""
    jobs = []
    for case in BROKEN:
        for command in COMMANDS:
            # mktemp is not thread-safe: every directory is made here, before the pool.
            directory = tmp_path_factory.mktemp(f"broken-{command}-{case.id}")
            write_config(directory, case.config)
            jobs.append((f"{command}:{case.id}", command, directory))

    def one(job: tuple[str, str, Path]) -> tuple[str, BrokenOutcome]:
        key, command, directory = job
        result = run_cli(_argv(command), directory, timeout=20)
        return key, BrokenOutcome(result, listing(directory))

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, jobs))


# The first of these tests pays for the whole parallel batch (~15 s on 2 idle cores).
@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", BROKEN, ids=[case.id for case in BROKEN])
def test_broken_config_is_refused_with_one_line_per_problem(
    case: Broken, command: str, broken_outcomes: dict[str, BrokenOutcome]
) -> None:
    outcome = broken_outcomes[f"{command}:{case.id}"]
    result = outcome.result
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result.stderr)
    assert result.stdout == ""
    lines = result.stderr_lines
    assert len(lines) == len(case.expected), lines
    unmatched = list(lines)
    for start in case.expected:
        match = next((line for line in unmatched if line.startswith(start)), None)
        assert match is not None, f"no line starts with {start!r}: {lines}"
        unmatched.remove(match)
    # Nothing written: no data directory, no database, no exchange state, no journal.
    assert outcome.files == [CONFIG_NAME]


def test_there_are_at_least_twenty_broken_configs() -> None:
    assert len(BROKEN) >= 20
    assert len({case.id for case in BROKEN}) == len(BROKEN)


@pytest.mark.parametrize("command", ["check-config", "run", "status"])
def test_missing_config_file(tmp_path: Path, command: str) -> None:
    argv = (
        ["check-config", "nowhere.yaml"]
        if command == "check-config"
        else [command, "-c", "nowhere.yaml"]
    )
    result = run_cli(argv, tmp_path, timeout=10)
    assert result.returncode == 2
    assert result.stderr_lines == ["nowhere.yaml: config file not found"]
    assert listing(tmp_path) == []
