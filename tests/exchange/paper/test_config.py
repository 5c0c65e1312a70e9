"""``exchange.name: paper`` in the settings: ``check-config`` accepts a source without keys
and refuses, one line each, an unknown source, a missing one and keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.support import fast_config, run_cli, write_config

pytestmark = pytest.mark.timeout(60)


def _check(tmp_path: Path, exchange: dict[str, Any]) -> tuple[int, list[str], str]:
    config = fast_config()
    config["exchange"] = exchange
    path = write_config(tmp_path, config)
    result = run_cli(["check-config", str(path)], tmp_path, timeout=20)
    return result.returncode, result.stderr_lines, result.stdout


def test_a_source_without_keys_is_accepted(tmp_path: Path) -> None:
    code, errors, out = _check(
        tmp_path, {"name": "paper", "paper": {"source": "binance", "fill": "touch"}}
    )
    assert (code, errors) == (0, [])
    paper = yaml.safe_load(out)["exchange"]["paper"]
    assert (paper["source"], paper["fill"]) == ("binance", "touch")


@pytest.mark.parametrize(
    ("exchange", "expected"),
    [
        (
            {"name": "paper", "paper": {"source": "binanse"}},
            (
                "exchange.paper.source: unknown exchange 'binanse' (did you mean 'binance'?); "
                "use a ccxt exchange id with WebSocket support (e.g. binance)"
            ),
        ),
        (
            {"name": "paper"},
            (
                "exchange.paper.source: required with exchange.name paper: a ccxt exchange id, "
                "e.g. binance"
            ),
        ),
        (
            {"name": "paper", "api_key": "k3y-value", "paper": {"source": "binance"}},
            (
                "exchange.api_key: must be empty with exchange.name paper (it reads public data "
                "only); to trade live, set exchange.name instead"
            ),
        ),
    ],
    ids=["unknown-source", "missing-source", "keys-given"],
)
def test_bad_paper_settings_are_refused_with_one_line(
    tmp_path: Path, exchange: dict[str, Any], expected: str
) -> None:
    code, errors, out = _check(tmp_path, exchange)
    assert code != 0 and out == ""
    assert len(errors) == 1, errors
    assert errors[0].endswith(expected), errors
    assert "k3y-value" not in errors[0]
