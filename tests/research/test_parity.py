"""One engine, proven the same: a price path fed to the daemon and to the backtest gives
the same orders, round trips and PnL, to the last decimal.

The backtest runs over candles and records every price at which it acted (its events).
Those prices, each held for a few ticks, become the CSV feed of the daemon's simulated
exchange (``quantmesh run``, fast replay); the daemon's orders (from the exchange's state
file) and round trips (from its database) must equal the backtest's.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.config import load_settings
from quantmesh.research.engine import SymbolSetup, run_symbol
from quantmesh.research.setup import market_of
from quantmesh.research.synthetic import random_walk_candles
from tests.cli.support import Daemon, changed, fast_config, read_only, sim_orders, write_config

pytestmark = pytest.mark.timeout(120)

LEAD_IN = 6.0  # seconds at the first price while the daemon starts
STEP = 0.03  # seconds between ticks
HOLD = 3  # ticks at each price (a live price dwells; lets the daemon settle at each)


def _config(csv: Path) -> dict[str, object]:
    return changed(
        fast_config(),
        {
            "exchange.simulated.fee_rate": "0.001",
            "exchange.simulated.balances": {"USDT": 1_000_000},
            "exchange.simulated.markets.ETHUSDT": {
                "price": 2000,
                "tick_size": "0.01",
                "lot_size": "0.0001",
                "min_notional": 5,
                "feed": {"type": "csv", "path": str(csv), "speed": 1.0},
            },
            "trading.symbols.0.buy_window_size": 4,
            "trading.symbols.0.sell_window_size": 4,
            "trading.symbols.0.anchor_price": 2000,
            "trading.reconcile_interval": 3600,
        },
    )


def test_daemon_and_backtest_trade_the_same(tmp_path: Path) -> None:
    csv = tmp_path / "prices.csv"
    csv.write_text("timestamp,price\n0,2000\n", encoding="utf-8")  # replaced below
    config_path = write_config(tmp_path, _config(csv))
    settings = load_settings(config_path)
    rules, fee = market_of(settings, "ETH/USDT", tmp_path / "none")
    setup = SymbolSetup(settings.trading.symbols[0].grid_params(), rules, fee)
    candles = random_walk_candles(40, price=2000.0, volatility=0.003, seed=7)
    record = run_symbol(setup, candles, 60_000, trace=True)
    assert record.events is not None and len(record.round_trips) >= 10

    rows = ["timestamp,price"]
    t = 0.0
    while t < LEAD_IN:
        rows.append(f"{t:.3f},{record.events[0][1]}")
        t += 0.25
    for _, price in record.events:
        for _ in range(HOLD):
            rows.append(f"{t:.3f},{price}")
            t += STEP
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")

    with Daemon(config_path, tmp_path) as daemon:
        ended = daemon.wait_for("sim_feed_ended", LEAD_IN + t + 60)
        assert ended, daemon.stderr[-3000:]
        assert daemon.wait_for("grid_created", 1), daemon.stderr[-3000:]
        time.sleep(1.5)  # the last ticks' plans
        code, _ = daemon.stop(signal.SIGTERM, 20)
        assert code == 0, daemon.stderr[-3000:]

    daemon_orders = sorted(
        (o["client_order_id"], o["side"], Decimal(o["price"]), Decimal(o["amount"]), o["status"])
        for o in sim_orders(tmp_path / "data" / "sim-exchange.db")
    )
    backtest_orders = sorted(
        (o.client_order_id, o.side, o.price, o.amount, o.status) for o in record.orders
    )
    assert daemon_orders == backtest_orders

    conn: sqlite3.Connection = read_only(tmp_path / "data" / "quantmesh.db")
    with conn:
        stored = conn.execute(
            "SELECT level, cycle, amount, buy_cost, sell_proceeds, pnl FROM round_trips"
            " ORDER BY closed_at, id"
        ).fetchall()
    conn.close()
    daemon_trips = sorted(
        (int(lv), int(cy), Decimal(str(a)), Decimal(str(b)), Decimal(str(s)), Decimal(str(p)))
        for lv, cy, a, b, s, p in stored
    )
    backtest_trips = sorted(
        (t.level, t.cycle, t.amount, t.buy_cost, t.sell_proceeds, t.pnl) for t in record.round_trips
    )
    assert daemon_trips == backtest_trips
    assert sum(trip[5] for trip in daemon_trips) == record.realized
