"""``quantmesh sim-exchange`` refuses bad flags and a bad config file with one line per
problem, and reads its file as the daemon reads its settings."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.cli.sim_exchange import add_arguments, clock_skew, sim_settings
from tests.cli.support import plain_lines, run_cli

from .support import SimProcess


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--market", "ETH/USDT"], "expected NAME=NUMBER"),
        (["--market", "ETH/USDT=-5"], "price"),
        (["--error-rate", "2"], "error_rate"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_cli(["sim-exchange", "--port", "0", *args], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = plain_lines(result.stderr)
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_a_taken_port_exits_1_with_one_line(sim: SimProcess, tmp_path: Path) -> None:
    result = run_cli(["sim-exchange", "--port", str(sim.port)], tmp_path)
    assert result.returncode == 1
    lines = plain_lines(result.stderr)
    assert len(lines) == 1 and "cannot start" in lines[0], result.stderr


@pytest.mark.parametrize("port", ["-1", "65536", "abc"])
def test_a_port_out_of_range_is_a_usage_error_not_a_traceback(tmp_path: Path, port: str) -> None:
    result = run_cli(["sim-exchange", "--port", port], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "argument --port:" in result.stderr and "is not a port number" in result.stderr


def _sim_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_duplicate_key_in_the_config_file_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(
        "markets:\n  ETH/USDT: {price: 2000}\nfee_rate: 0.001\nfee_rate: 0.002\n", encoding="utf-8"
    )
    result = run_cli(["sim-exchange", "--port", "0", "-c", str(config)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert plain_lines(result.stderr) == [
        "fee_rate: duplicate key (line 4 repeats the one on line 3)"
    ], result.stderr


def test_an_unset_variable_in_the_config_file_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("balances:\n  USDT: ${QM_TEST_UNSET_BALANCE}\n", encoding="utf-8")
    result = run_cli(["sim-exchange", "--port", "0", "-c", str(config)], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = plain_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "balances.USDT: environment variable QM_TEST_UNSET_BALANCE is not set"
    ), result.stderr


def test_variables_in_the_config_file_are_interpolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QM_TEST_BALANCE", "12345.5")
    monkeypatch.setenv("QM_TEST_SKEW", "-7")
    config = tmp_path / "sim.yaml"
    config.write_text(
        "markets:\n  ETH/USDT: {price: '${QM_TEST_PRICE:-1500}'}\n"
        "balances: {USDT: '${QM_TEST_BALANCE}'}\n"
        "clock_skew: ${QM_TEST_SKEW}\n",
        encoding="utf-8",
    )
    args = _sim_args("-c", str(config))
    settings = sim_settings(args)
    assert settings.balances == {"USDT": Decimal("12345.5")}
    assert settings.markets["ETH/USDT"].price == Decimal(1500)
    assert clock_skew(args) == -7.0
