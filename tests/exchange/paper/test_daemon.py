"""``quantmesh run`` trading a grid on ``exchange.name: paper`` end to end: the simulator
moves the price, our paper engine fills the daemon's orders from the simulator's public
trades, and the simulator's own account is never used."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.support import Daemon, write_config
from tests.exchange.sim.server.support import BINANCE_OPTIONS, SimProcess, binance_urls

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[3]


def paper_config(sim: SimProcess) -> dict[str, Any]:
    """The shipped simulator example, with the exchange swapped for paper on the simulator."""
    text = (ROOT / "config" / "config.sim.example.yaml").read_text(encoding="utf-8")
    config: dict[str, Any] = yaml.safe_load(text)
    config["exchange"] = {
        "name": "paper",
        "paper": {"source": "binance", "state_path": "./data/paper.db"},
        "urls": binance_urls(sim.port),
        "options": dict(BINANCE_OPTIONS),
        "request_timeout": 5,
        "price_stale_after": 10,
        "price_poll_interval": 1,
    }
    config["logging"] = {"level": "debug", "format": "json"}
    return config


def test_daemon_trades_a_grid_on_paper(sim: SimProcess, tmp_path: Path) -> None:
    sim.set_price("ETH/USDT", "2000")
    path = write_config(tmp_path, paper_config(sim))
    with Daemon(path, tmp_path) as daemon:
        placed = daemon.wait_for("order_placed", 30, count=3)
        assert sorted(float(e["price"]) for e in placed) == [1985, 1990, 1995], daemon.stderr[
            -3000:
        ]
        sim.set_price("ETH/USDT", "1995")  # at the price: 'through' does not fill
        daemon.wait_for("order_filled", 2)
        assert daemon.events("order_filled") == []
        sim.set_price("ETH/USDT", "1994.99")  # through it: the buy at 1995 fills
        assert daemon.wait_for("order_filled", 20), daemon.stderr[-3000:]
        daemon.wait_for("order_placed", 20, where=lambda e: e["side"] == "sell")
        sim.set_price("ETH/USDT", "2000.01")  # its sell at 2000 fills
        trips = daemon.wait_for("round_trip", 20)
        assert trips and trips[0]["grid_level"] == -1, daemon.stderr[-3000:]
        code, _ = daemon.stop(signal.SIGTERM, 20)
        assert code == 0, daemon.stderr[-3000:]
    assert "Traceback" not in daemon.stderr
    assert not [o for o in sim.orders() if o["client_order_id"].startswith("qm.")]
    assert (tmp_path / "data" / "paper.db").is_file()
