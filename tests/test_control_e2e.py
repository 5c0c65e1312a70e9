"""Control of a running daemon end to end: ``quantmesh ctl`` against ``quantmesh run``
(simulated exchange, SQLite): stop-buys and cancel-all act on the exchange, the state
survives a restart (nothing placed after it), resume trades again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.cli.support import (
    Daemon,
    api_status,
    changed,
    eventually,
    fast_config,
    http_base,
    run_cli,
    write_config,
)

TOKEN = "tok-control-e2e"


def _eth(base: str) -> dict[str, Any]:
    symbol: dict[str, Any] = api_status(base, TOKEN)["symbols"].get("ETH/USDT", {})
    return symbol


def _ctl(tmp_path: Path, config: Path, base: str, *args: str) -> str:
    result = run_cli(["ctl", *args, "-c", str(config), "--url", base], tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ctl_steers_a_running_daemon_and_the_state_survives_a_restart(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        changed(
            fast_config(),
            {"http": {"enabled": True, "host": "127.0.0.1", "port": 0, "token": TOKEN}},
        ),
    )
    with Daemon(config, tmp_path) as daemon:
        base = http_base(daemon)
        eventually(lambda: _eth(base).get("open_orders", 0) > 0, 20, "the grid places orders")
        assert _eth(base)["control"]["mode"] == "active"

        out = _ctl(
            tmp_path, config, base, "stop-buys", "ETH/USDT", "--reason", "dip", "--by", "ana"
        )
        assert out.startswith("ETH/USDT: stop_buys, by ana, reason 'dip'; takes effect now"), out
        eventually(lambda: _eth(base)["control"]["mode"] == "stop_buys", 5, "status shows it")
        daemon.wait_for("control_followed", 10)

        _ctl(tmp_path, config, base, "cancel-all", "ETH/USDT", "--reason", "exit")
        eventually(lambda: _eth(base)["open_orders"] == 0, 15, "every order cancelled")
        table = _ctl(tmp_path, config, base, "status")
        assert "ETH/USDT  paused+cancel" in table, table
        assert "cancel-all by" in table and "stop-buys by ana" in table, table

    # a restart: the desired state is read from the database before anything is placed
    with Daemon(config, tmp_path) as daemon:
        base = http_base(daemon)
        eventually(lambda: _eth(base).get("trading") is True, 20, "the trader is back")
        time.sleep(2.0)  # ticks arrive every few tenths of a second: nothing may be placed
        assert _eth(base)["open_orders"] == 0
        assert _eth(base)["control"]["mode"] == "paused"
        assert not daemon.events("order_placed")

        _ctl(tmp_path, config, base, "resume", "ETH/USDT")
        eventually(lambda: _eth(base)["open_orders"] > 0, 15, "resumed: orders again")
