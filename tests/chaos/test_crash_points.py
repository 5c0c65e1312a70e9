"""The write-behind under kill -9 at each step between an exchange's answer and the next
order, with real processes: one ``quantmesh run`` on SQLite against the exchange
simulator, killed by a crash point (``QUANTMESH_FAILPOINTS``) and started again.

- ``order_answered@4``: the exchange accepted the order that follows the first fill (its
  sell, or the buy below); neither it nor the fill may be stored yet;
- ``fill_applied@1``: the first fill is applied in memory, its record only queued;
- ``fills_stored@1``: the transaction with the first fill is stored, the next order not
  necessarily sent.

After the restart the daemon trades on through more fills in both directions. The
simulator's records give the verdict: no level bought twice without the sell between
(nor sold twice), no id placed again after its order filled, no two orders open at once on
one price, every fill stored exactly once and applied to its level, and the stored
inventory equal to what was bought and not sold.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.support import Daemon, write_config
from tests.exchange.sim.server.support import (
    API_KEY,
    API_SECRET,
    SimProcess,
    duplicates,
    write_sim_config,
)
from tests.servers.base import wait_until

from .harness import ROOT
from .invariants import double_buys, double_sells, fills_vs_db, open_overlaps, reused_after_fill

pytestmark = pytest.mark.slow

ETH = "ETH/USDT"
KILLED = -9


def daemon_config(sim_port: int) -> dict[str, Any]:
    text = (ROOT / "config" / "config.sim.example.yaml").read_text(encoding="utf-8")
    config: dict[str, Any] = yaml.safe_load(text.replace("127.0.0.1:8765", f"127.0.0.1:{sim_port}"))
    config["exchange"].update(
        api_key=API_KEY, secret=API_SECRET, order_resync_interval=1, rate_limit=0.005
    )
    config["trading"] = {
        "shutdown_grace": 3,
        "reconcile_interval": 2,
        "symbols": [{"symbol": "ETHUSDT", "price_interval": 2, "order_quantity": 30,
                     "buy_window_size": 3, "sell_window_size": 3}],
    }  # fmt: skip
    config["database"] = {
        "type": "sqlite",
        "dsn": "./data/quantmesh.db",
        "journal_path": "./data/journal.jsonl",
    }
    config["logging"] = {"level": "info", "format": "json"}
    return config


@pytest.fixture(scope="module")
def sim_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sim_config(tmp_path_factory.mktemp("sim-config"))


@pytest.fixture
def sim(tmp_path: Path, sim_config: Path) -> Iterator[SimProcess]:
    with SimProcess(tmp_path / "sim", "--config", str(sim_config)) as process:
        yield process


def eth(sim: SimProcess) -> list[dict[str, Any]]:
    return [o for o in sim.orders() if o["symbol"] == ETH]


def open_eth(sim: SimProcess) -> list[dict[str, Any]]:
    return [o for o in eth(sim) if o["status"] == "open"]


def quiet(sim: SimProcess, what: str, seconds: float = 1.0) -> None:
    """Wait until the simulator's orders stop changing for ``seconds``."""
    last: list[Any] = []
    still = time.monotonic()

    def settled() -> bool:
        nonlocal last, still
        now = [(o["client_order_id"], o["status"], o["filled"]) for o in eth(sim)]
        if now != last:
            last, still = now, time.monotonic()
        return time.monotonic() - still >= seconds

    wait_until(settled, 20, what)


def stored(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("point", ["order_answered@4", "fill_applied@1", "fills_stored@1"])
def test_a_kill_at_each_step_loses_nothing_and_places_nothing_twice(
    point: str, sim: SimProcess, tmp_path: Path
) -> None:
    workdir = tmp_path / "daemon"
    config = write_config(workdir, daemon_config(sim.port))
    crashing = Daemon(config, workdir, env={"QUANTMESH_FAILPOINTS": point})
    try:
        wait_until(lambda: len(open_eth(sim)) == 3 or crashing.wait(0) is not None, 20,
                   "the first three buys")  # fmt: skip
        assert len(open_eth(sim)) == 3, crashing.stderr
        sim.set_price(ETH, "1997")  # fills the buy at 1998: the crash point follows
        assert crashing.wait(20) == KILLED, crashing.stderr
        assert crashing.events("failpoint_reached"), crashing.stderr
    finally:
        crashing.kill()

    daemon = Daemon(config, workdir)
    try:
        reconciled = daemon.wait_for("reconciled", 20)
        assert reconciled, daemon.stderr
        quiet(sim, "the restarted daemon to settle")
        for price in ("1993", "2001", "1995", "1999"):  # more fills, both ways
            sim.set_price(ETH, price)
            quiet(sim, f"the daemon to act on {price}")
        holding = stored(workdir / "data" / "quantmesh.db", "SELECT SUM(holding) FROM grid_levels")
    finally:
        daemon.kill()

    orders = eth(sim)
    trades = [t for t in sim.trades() if t["symbol"] == ETH]
    db = workdir / "data" / "quantmesh.db"
    stored_ids = [row[0] for row in stored(db, "SELECT trade_id FROM trades")]
    unapplied = stored(db, "SELECT trade_id FROM trades WHERE NOT level_applied")
    assert double_buys(orders) == [] and double_sells(orders) == []
    assert reused_after_fill(orders) == []
    assert open_overlaps(orders) == [] and duplicates(orders) == []
    check = fills_vs_db(trades, stored_ids)
    assert not check.missing and not check.duplicated, check
    assert unapplied == []
    bought = sum(Decimal(str(t["amount"])) for t in trades if t["side"] == "buy")
    sold = sum(Decimal(str(t["amount"])) for t in trades if t["side"] == "sell")
    assert sold > 0  # the restarted daemon completed round trips
    assert Decimal(str(holding[0][0])) == bought - sold  # the fee is paid in the quote
