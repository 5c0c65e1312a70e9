"""``quantmesh sim-exchange`` refuses bad flags with one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_support import plain_lines, run_cli

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
