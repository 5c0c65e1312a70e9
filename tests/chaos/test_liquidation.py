"""A liquidation taken over mid-way, with real processes: two ``quantmesh run`` instances on
the same symbols (Redis leases, PostgreSQL), the exchange simulator filling a resting order
only when the price goes through it, prices set by the test.

The owner of ETH buys three levels; ``quantmesh ctl liquidate`` sent to the other instance
reaches it through the database; its sells rest at the price; it is killed (-9). The other
instance takes ETH over, adopts the resting sells and, once the price moves through them,
has sold everything - once. The simulator's records give the verdict: exactly what was
bought sold, no buy placed after the owner followed the liquidation, no level sold twice,
no order open twice, and every fill stored once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.support import run_cli
from tests.exchange.sim.server.support import EXTRA_KEYS, SimProcess, duplicates, write_sim_config
from tests.servers.base import wait_until
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

from .harness import CHECK_INTERVAL, LEASE_TTL, Node, owner_of, wait_owner
from .invariants import double_buys, double_sells, fills_vs_db, open_overlaps, reused_after_fill

pytestmark = pytest.mark.slow

ETH = "ETH/USDT"
KEYS = (("liq-key-1", "liq-secret-1"), *EXTRA_KEYS[:1])
TOKEN = "liquidation-test-token"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[list[Node], SimProcess, PostgresServer]]:
    with RedisServer(tmp_path / "redis") as redis, PostgresServer() as pg:
        pg.create_database("quantmesh")
        sim_config = write_sim_config(tmp_path / "sim")  # prices move only when set here
        config = json.loads(sim_config.read_text())
        sim_config.write_text(json.dumps({**config, "fill": "through"}))
        with SimProcess(
            tmp_path / "sim",
            "--config",
            str(sim_config),
            api_key=KEYS[0][0],
            api_secret=KEYS[0][1],
            extra_keys=KEYS[1:],
        ) as sim:
            nodes = [
                Node.create(f"node-{i + 1}", key, tmp_path, sim.port, redis.port, pg, "quantmesh")
                for i, key in enumerate(KEYS)
            ]
            for node in nodes:  # steered through the HTTP API: a token
                settings = yaml.safe_load(node.config.read_text())
                settings["http"]["token"] = node.token = TOKEN
                node.config.write_text(yaml.safe_dump(settings))
            try:
                yield nodes, sim, pg
            finally:
                for node in nodes:
                    node.close()
                    (node.workdir / "stderr.log").write_text(node.stderr())


def symbol_view(node: Node) -> dict[str, Any] | None:
    status = node.status()
    return None if status is None else status["symbols"].get(ETH)


def eth_orders(sim: SimProcess) -> list[dict[str, Any]]:
    return [o for o in sim.orders() if o["symbol"] == ETH]


def filled(orders: list[dict[str, Any]], side: str) -> Decimal:
    return sum((Decimal(str(o["filled"])) for o in orders if o["side"] == side), Decimal(0))


@pytest.mark.timeout(150)
def test_a_liquidation_taken_over_by_another_instance_sells_everything_once(
    pair: tuple[list[Node], SimProcess, PostgresServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nodes, sim, pg = pair
    for node in nodes:
        node.start()
    owner, _ = wait_owner(nodes, ETH, 60)
    other = next(node for node in nodes if node is not owner)
    wait_until(lambda: (v := symbol_view(owner)) is not None and v["open_orders"] >= 3, 20,
               "the owner's buys")  # fmt: skip
    sim.set_price(ETH, "1993.99")  # through the buys at 1998, 1996 and 1994
    wait_until(lambda: filled(eth_orders(sim), "buy") >= Decimal("0.045"), 20, "three buys to fill")
    bought = filled(eth_orders(sim), "buy")
    wait_until(lambda: Decimal(symbol_view(owner)["inventory"]) == bought, 20,  # type: ignore[index]
               "the owner to record the buys")  # fmt: skip

    asked = run_cli(
        ["ctl", "liquidate", ETH, "--reason", "way out", "--by", "ops", "-c", str(other.config)],
        tmp_path,
    )
    assert asked.returncode == 0, asked.stderr
    wait_until(lambda: symbol_view(owner)["control"]["mode"] == "liquidate", 10,  # type: ignore[index]
               "the owner to follow the liquidation")  # fmt: skip
    followed = time.time()
    wait_until(
        lambda: sum(1 for o in eth_orders(sim) if o["side"] == "sell" and o["status"] == "open"
                    and Decimal(str(o["price"])) == Decimal("1993.99")) == 3,
        10, "the liquidation's three sells to rest at the price",
    )  # fmt: skip

    owner.kill()
    killed = time.monotonic()
    wait_owner(nodes, ETH, LEASE_TTL + CHECK_INTERVAL + 15, other_than=owner)
    took = time.monotonic() - killed
    assert owner_of(nodes, ETH) is other
    wait_until(lambda: symbol_view(other)["control"]["mode"] == "liquidate", 10,  # type: ignore[index]
               "the new owner to follow the liquidation")  # fmt: skip
    sim.set_price(ETH, "1994.5")  # through the resting sells
    wait_until(
        lambda: (v := symbol_view(other)) is not None
        and Decimal(v["inventory"]) == 0 and v["open_orders"] == 0,
        20, "the new owner to have sold everything",
    )  # fmt: skip
    time.sleep(1)  # nothing more may happen

    orders = eth_orders(sim)
    sold = filled(orders, "sell")
    late_buys = [o["client_order_id"] for o in orders
                 if o["side"] == "buy" and o["created_at"] > followed]  # fmt: skip
    all_orders = sim.orders()
    trades = sim.trades()
    stored = [row[0] for row in pg.query("SELECT trade_id FROM trades", database="quantmesh")]
    with capsys.disabled():
        print(f"\nliquidation: bought {bought}, sold {sold}, taken over after {took:.1f} s")
    assert sold == bought  # all of it, and not a unit more
    assert late_buys == []
    assert double_buys(all_orders) == [] and double_sells(all_orders) == []
    assert open_overlaps(all_orders, by_level=True) == []  # each level sold once at a time
    assert open_overlaps([o for o in all_orders if o["created_at"] < followed]) == []
    assert reused_after_fill(all_orders) == []
    assert duplicates(all_orders) == []
    check = fills_vs_db(trades, stored)
    assert not check.missing and not check.duplicated, check
