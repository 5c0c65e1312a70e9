"""End to end over HTTP: ``quantmesh run`` trading through ccxt's ``binance`` classes
against ``quantmesh sim-exchange``, both real processes.

The daemon's config is ``config/config.sim.example.yaml`` with only the port and the data
paths changed, so the shipped example is what is tested. Prices move only when a test
moves them (flat feed), which makes fills deterministic.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.support import Daemon, write_config
from tests.exchange.sim.server.support import SimProcess, duplicates, running_sim
from tests.servers.base import wait_until
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
# Real-looking Binance credentials (64 characters each): they must never reach a log line.
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
ENV = {"QM_SIM_API_KEY": API_KEY, "QM_SIM_API_SECRET": API_SECRET}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    workdir = tmp_path_factory.mktemp("sim")
    with running_sim(workdir, api_key=API_KEY, api_secret=API_SECRET) as process:
        yield process


def daemon_config(sim: SimProcess, symbol: str = "ETHUSDT", interval: int = 5) -> dict[str, Any]:
    text = (ROOT / "config" / "config.sim.example.yaml").read_text(encoding="utf-8")
    config: dict[str, Any] = yaml.safe_load(text.replace("127.0.0.1:8765", f"127.0.0.1:{sim.port}"))
    config["trading"]["symbols"][0].update(symbol=symbol, price_interval=interval)
    config["logging"] = {"level": "debug", "format": "json"}
    return config


def open_orders(sim: SimProcess, symbol: str) -> dict[str, dict[str, Any]]:
    return {
        o["client_order_id"]: o
        for o in sim.orders()
        if o["symbol"] == symbol and o["status"] == "open"
    }


def test_daemon_trades_a_round_trip_over_http_without_leaking_keys(
    sim: SimProcess, tmp_path: Path
) -> None:
    sim.set_price("ETH/USDT", "2000")
    config = daemon_config(sim)
    port = free_port()
    config["http"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    path = write_config(tmp_path, config)
    with Daemon(path, tmp_path, ENV) as daemon:
        placed = daemon.wait_for("order_placed", 30, count=3)
        assert len(placed) == 3, daemon.stderr[-3000:]
        # the exchange's clock was measured before any order: status and metrics show it
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as reply:
            clock = json.load(reply)["exchange_clock"]
        assert abs(clock["offset_s"]) < 1.0 and 0 <= clock["uncertainty_s"] < 1.0, clock
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            scrape = reply.read().decode()
        assert 'quantmesh_exchange_clock_offset_seconds{exchange="binance"}' in scrape
        assert sorted(float(e["price"]) for e in placed) == [1985, 1990, 1995]
        sim.set_price("ETH/USDT", "1994")  # the buy at 1995 fills
        assert daemon.wait_for("order_filled", 20), daemon.stderr[-3000:]
        daemon.wait_for("order_placed", 20, where=lambda e: e["side"] == "sell")
        sim.set_price("ETH/USDT", "2001")  # its sell at 2000 fills
        trips = daemon.wait_for("round_trip", 20)
        assert trips and trips[0]["grid_level"] == -1, daemon.stderr[-3000:]
        code, _ = daemon.stop(signal.SIGTERM, 20)
        assert code == 0, daemon.stderr[-3000:]
    assert duplicates(sim.orders()) == []
    assert API_KEY not in daemon.stderr and API_SECRET not in daemon.stderr
    assert API_KEY not in daemon.stdout and API_SECRET not in daemon.stdout


def test_restart_after_kill_adopts_open_orders(sim: SimProcess, tmp_path: Path) -> None:
    sim.set_price("BTC/USDT", "30000")
    path = write_config(tmp_path, daemon_config(sim, "BTCUSDT", interval=100))
    with Daemon(path, tmp_path, ENV) as first:
        assert len(first.wait_for("order_placed", 30, count=3)) == 3, first.stderr[-3000:]
        wait_until(lambda: len(open_orders(sim, "BTC/USDT")) == 3, 10, "3 open BTC orders")
        first.proc.send_signal(signal.SIGKILL)
        first.wait(10)
    before = open_orders(sim, "BTC/USDT")
    with Daemon(path, tmp_path, ENV) as second:
        reconciled = second.wait_for("reconciled", 30)
        assert reconciled and reconciled[0]["adopted"] == 3, second.stderr[-3000:]
        second.wait_for("order_placed", 3)  # give it time to (wrongly) place anything
        replaced = [e for e in second.events("order_placed")]
        assert replaced == []
        assert open_orders(sim, "BTC/USDT").keys() == before.keys()
        code, _ = second.stop(signal.SIGTERM, 20)
        assert code == 0
    assert duplicates(sim.orders()) == []


def test_refused_credentials_stop_the_daemon_with_one_line(sim: SimProcess, tmp_path: Path) -> None:
    before = len(sim.orders())
    path = write_config(tmp_path, daemon_config(sim))
    env = {**ENV, "QM_SIM_API_SECRET": "not-the-secret"}
    with Daemon(path, tmp_path, env) as daemon:
        code = daemon.wait(30)
    assert code == 1
    errors = daemon.plain_lines()
    assert len(errors) == 1 and "refused the API key" in errors[0], daemon.stderr[-2000:]
    assert "not-the-secret" not in daemon.stderr
    assert len(sim.orders()) == before


def test_daemon_survives_every_fault_without_duplicates(sim: SimProcess, tmp_path: Path) -> None:
    """503s, 429s, answers lost after acceptance, latency and dropped WebSockets at once:
    the daemon keeps trading, never holds two orders on one level, and stops cleanly."""
    sim.set_price("ETH/USDT", "2000")
    config = daemon_config(sim, "ETHUSDT", interval=7)
    config["exchange"].update(request_timeout=1.5, price_stale_after=3, order_resync_interval=1)
    path = write_config(tmp_path, config)
    sim.faults(
        error_rate=0.15,
        rate_limit_rate=0.1,
        retry_after=1,
        accept_timeout_rate=0.2,
        hang=2.5,
        latency=0.02,
        ws_drop_after=2,
    )
    try:
        with Daemon(path, tmp_path, ENV) as daemon:
            assert daemon.wait_for("reconciled", 40), daemon.stderr[-3000:]
            for price in ("1990", "1975", "1999", "2010", "1980", "2003"):
                daemon.wait_for("order_placed", 2, count=10**6)  # let it work a while
                sim.set_price("ETH/USDT", price)
            daemon.wait_for("order_placed", 2, count=10**6)
            # on a loaded machine the orders may come only after those moves: one more,
            # well below the window, fills whatever buys are open by then
            sim.set_price("ETH/USDT", "1960")
            daemon.wait_for("order_filled", 20)
            assert daemon.proc.poll() is None, daemon.stderr[-3000:]
            sim.reset_faults()
            code, _ = daemon.stop(signal.SIGTERM, 20)
            assert code == 0, daemon.stderr[-3000:]
    finally:
        sim.reset_faults()
    mine = [o for o in sim.orders() if o["client_order_id"].startswith("qm.")]
    assert daemon.events("order_filled"), "faults stopped all trading"
    assert duplicates(mine) == []
    assert "Traceback" not in daemon.stderr
    hit = {e["event"] for e in daemon.events()} & {
        "order_create_outcome_unknown",
        "rate_limited",
        "order_stream_failed",
        "price_stream_failed",
    }
    assert len(hit) >= 3, f"too few faults hit the daemon: {hit}"
