"""``quantmesh ctl``: its output, and a clear line when it cannot reach the instance.

The end-to-end run against a daemon is in tests/test_control_e2e.py."""

from __future__ import annotations

from pathlib import Path

from quantmesh.cli.ctl import format_answer, format_controls
from tests.support import free_port

from .support import fast_config, run_cli, write_config


def test_an_unreachable_instance_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = write_config(tmp_path, fast_config())
    port = free_port()
    result = run_cli(
        ["ctl", "pause", "ETH/USDT", "-c", str(config), "--url", f"http://127.0.0.1:{port}"],
        tmp_path,
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the instance" in lines[0], result.stderr
    assert f"127.0.0.1:{port}" in lines[0]


def test_an_unknown_action_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, fast_config())
    result = run_cli(["ctl", "halt", "ETH/USDT", "-c", str(config)], tmp_path)
    assert result.returncode == 2 and "invalid choice: 'halt'" in result.stderr


def test_the_answer_and_the_table_say_who_asked_what_and_why() -> None:
    answer = {
        "symbol": "ETH/USDT",
        "action": "cancel-all",
        "control": {"mode": "paused", "cancel_orders": True, "reason": "exit", "by": "ana@h"},
        "takes_effect": "now",
    }
    assert format_answer(answer) == (
        "ETH/USDT: paused (every order cancelled), by ana@h, reason 'exit'; takes effect now"
    )
    table = format_controls(
        {
            "symbols": {
                "ETH/USDT": {"mode": "paused", "cancel_orders": True, "by": "ana@h", "reason": "exit"},
                "BTC/USDT": {"mode": "active", "cancel_orders": False, "by": "", "reason": ""},
            },
            "audit": [
                {"symbol": "ETH/USDT", "action": "cancel-all", "by": "ana@h",
                 "instance": "node-1", "reason": "exit"},
            ],
        }
    )  # fmt: skip
    assert table.splitlines() == [
        "SYMBOL    MODE           BY     REASON",
        "BTC/USDT  active",
        "ETH/USDT  paused+cancel  ana@h  exit",
        "recent actions:",
        "  ETH/USDT cancel-all by ana@h on node-1: exit",
    ]
