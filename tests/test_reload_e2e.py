"""Reloading a running daemon's settings end to end: ``quantmesh reload`` and SIGHUP
against ``quantmesh run`` (simulated exchange, SQLite, HTTP on port 0 with a token)."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import (
    Daemon,
    api_status,
    changed,
    eventually,
    fast_config,
    http_base,
    run_cli,
    sim_orders,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

TOKEN = "tok-reload-e2e"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
BTC_MARKET = {
    "price": 60000,
    "tick_size": 0.01,
    "feed": {"type": "random_walk", "interval": 0.05, "volatility": 0.002, "seed": 3},
}
BTC = {"symbol": "BTCUSDT", "price_interval": 100, "order_quantity": 30,
       "buy_window_size": 2, "sell_window_size": 2}  # fmt: skip


def _config(**changes: Any) -> dict[str, Any]:
    base = changed(
        fast_config(),
        {
            "http": {"enabled": True, "host": "127.0.0.1", "port": 0, "token": TOKEN},
            "exchange.simulated.markets.BTCUSDT": BTC_MARKET,
            "trading.cancel_on_exit": True,
        },
    )
    return changed(base, changes)


def _status(base: str) -> dict[str, Any]:
    return api_status(base, TOKEN)


def _symbol(base: str, symbol: str) -> dict[str, Any]:
    found: dict[str, Any] = _status(base)["symbols"].get(symbol, {})
    return found


def _reload(tmp_path: Path, config: Path, base: str) -> Any:
    return run_cli(["reload", "-c", str(config), "--url", base], tmp_path, timeout=60)


def test_an_invalid_file_changes_nothing_and_reload_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, _config())
    with Daemon(config, tmp_path) as daemon:
        base = http_base(daemon)
        eventually(lambda: _symbol(base, "ETH/USDT").get("open_orders", 0) > 0, 20, "orders")
        write_config(tmp_path, _config(**{"trading.symbols.0.price_interval": -1}))
        result = _reload(tmp_path, config, base)
        assert result.returncode == 2, result
        assert "trading.symbols[0].price_interval: must be greater than 0" in result.stderr
        # the command checks the file before it asks; the instance checks it again
        request = urllib.request.Request(f"{base}/api/reload", method="POST", headers=HEADERS)
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        assert answer.value.code == 422
        assert "price_interval" in json.load(answer.value)["problems"][0]
        assert daemon.proc.poll() is None
        refused = daemon.wait_for("reload_refused", 5)
        assert refused and any("price_interval" in p for p in refused[0]["problems"])
        last = _status(base)["reload"]
        assert last["ok"] is False and "price_interval" in last["problems"][0]
        assert _symbol(base, "ETH/USDT")["trading"] is True
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert 'quantmesh_config_reloads_total{result="refused"} 1.0' in metrics


def test_symbols_added_removed_and_retuned_by_reload(tmp_path: Path) -> None:
    config = write_config(tmp_path, _config())
    with Daemon(config, tmp_path) as daemon:
        base = http_base(daemon)
        eventually(lambda: _symbol(base, "ETH/USDT").get("open_orders", 0) > 0, 20, "ETH orders")

        # a symbol added: traded as at start
        write_config(tmp_path, _config(**{"trading.symbols.1": BTC}))
        result = _reload(tmp_path, config, base)
        assert result.returncode == 0, result
        assert result.stdout.splitlines() == ["symbol added: BTC/USDT"]
        eventually(lambda: _symbol(base, "BTC/USDT").get("open_orders", 0) > 0, 20, "BTC orders")

        # a window changed: the trader restarts on it
        write_config(
            tmp_path, _config(**{"trading.symbols.1": BTC, "trading.symbols.0.buy_window_size": 5})
        )
        result = _reload(tmp_path, config, base)
        assert result.stdout.splitlines() == ["ETH/USDT: buy_window_size 3 -> 5"], result
        assert daemon.wait_for("symbol_trader_restarting", 10)
        eventually(lambda: _buys(base) > 3, 20, "more than the old window's 3 buys open")

        # a symbol removed: it stops, its orders cancelled (cancel_on_exit), its lease gone
        write_config(tmp_path, _config(**{"trading.symbols.0.buy_window_size": 5}))
        result = _reload(tmp_path, config, base)
        assert result.stdout.splitlines() == ["symbol removed: BTC/USDT"], result
        assert "BTC/USDT" not in _status(base)["symbols"]
        assert "BTC/USDT" not in _status(base)["ownership"]["owned"]
        assert daemon.wait_for("symbol_removed", 5)
        assert not daemon.events("open_orders_left")
        assert _status(base)["reload"]["changes"] == ["symbol removed: BTC/USDT"]

        # a setting that needs a restart: said, the rest applied
        write_config(
            tmp_path,
            _config(**{"trading.symbols.0.buy_window_size": 4, "database.dsn": "./data/other.db"}),
        )
        result = _reload(tmp_path, config, base)
        assert result.returncode == 0
        assert result.stdout.splitlines() == [
            "ETH/USDT: buy_window_size 5 -> 4",
            "database.dsn: needs a restart (not applied)",
        ]
        assert daemon.proc.poll() is None
    assert _btc_open_orders(tmp_path) == 0


def _buys(base: str) -> int:
    orders = _symbol(base, "ETH/USDT").get("orders", [])
    return sum(1 for order in orders if order["side"] == "buy")


def _btc_open_orders(tmp_path: Path) -> int:
    orders = sim_orders(tmp_path / "data" / "sim-exchange.db")
    assert any(o.get("symbol") == "BTC/USDT" for o in orders)  # it did trade
    return sum(1 for o in orders if o.get("symbol") == "BTC/USDT" and o.get("status") == "open")


def test_sighup_reloads_like_the_command(tmp_path: Path) -> None:
    config = write_config(tmp_path, _config())
    with Daemon(config, tmp_path) as daemon:
        base = http_base(daemon)
        eventually(lambda: _symbol(base, "ETH/USDT").get("open_orders", 0) > 0, 20, "ETH orders")
        write_config(tmp_path, _config(**{"trading.symbols.1": BTC}))
        os.kill(daemon.proc.pid, signal.SIGHUP)
        assert daemon.wait_for("reload_applied", 15), daemon.stderr
        eventually(lambda: _symbol(base, "BTC/USDT").get("open_orders", 0) > 0, 20, "BTC orders")
        assert _status(base)["reload"]["changes"] == ["symbol added: BTC/USDT"]
        assert daemon.proc.poll() is None
        code, _ = daemon.stop(signal.SIGTERM, 30)
        assert code == 0, daemon.stderr


def test_a_new_step_is_refused_while_the_grid_holds_orders_and_the_trader_keeps_running(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, _config())
    with Daemon(config, tmp_path) as daemon:
        base = http_base(daemon)
        eventually(lambda: _symbol(base, "ETH/USDT").get("open_orders", 0) > 0, 20, "ETH orders")
        write_config(tmp_path, _config(**{"trading.symbols.0.price_interval": 7}))
        result = _reload(tmp_path, config, base)
        assert result.returncode == 0, result
        [line] = result.stdout.splitlines()
        assert line.startswith("ETH/USDT: price_interval 5 -> 7: refused: the grid holds"), line
        assert "the trader keeps running on it" in line
        assert not daemon.events("symbol_trader_restarting")  # the running trader was kept
        assert _status(base)["reload"]["changes"] == [line]
        prices = sorted(Decimal(order["price"]) for order in _symbol(base, "ETH/USDT")["orders"])
        assert len(prices) > 1 and all((p - prices[0]) % 5 == 0 for p in prices), prices  # step 5
        assert _symbol(base, "ETH/USDT")["trading"] is True
