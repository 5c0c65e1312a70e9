"""A fleet on PostgreSQL alone, no Redis and no etcd anywhere: two real ``quantmesh run``
processes configured with the same symbols (``distributed_lock.type: postgres``) keep
their grids, their locks, their membership and their ownership records in one PostgreSQL
database, and share the exchange simulator. The owner of ETH is killed with SIGKILL: the
other instance takes its symbols over once the dead one's leases lapse on the database's
clock, and the simulator's records show no order placed twice (no two orders open at once
on one symbol, side and price; no level bought or sold twice in a row; no two instances
alternating on a symbol).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import (
    CHECK_INTERVAL,
    LEASE_TTL,
    SYMBOLS,
    Node,
    node_config,
    owner_of,
    wait_owner,
)
from tests.chaos.invariants import double_buys, double_sells, interleavings, open_overlaps
from tests.cli.support import write_config
from tests.exchange.sim.server.support import EXTRA_KEYS, SimProcess, write_sim_config
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import TcpProxy
from tests.support import free_port

pytestmark = pytest.mark.slow
KEYS = (("pg-fleet-key-1", "pg-fleet-secret-1"), EXTRA_KEYS[0])
# A take-over on the database: the dead owner's lease ends exactly LEASE_TTL after its last
# renewal (the server's clock) and is seen at the next try (one check interval); then the
# new owner loads the grid and reconciles with the exchange.
FAILOVER_BOUND = LEASE_TTL + CHECK_INTERVAL + 3.0


def pg_node(name: str, key: tuple[str, str], root: Path, sim: int, pg: PostgresServer) -> Node:
    """One of two instances on the chaos harness's settings, its lock, fleet and grids in
    PostgreSQL (through a loopback proxy of its own, in both of the harness's slots)."""
    workdir = root / name
    workdir.mkdir(parents=True)
    db_proxy = TcpProxy("127.0.0.1", pg.port)
    db_proxy.start()
    http_port = free_port()
    config = node_config(name, key, sim, 0, pg.url("quantmesh", port=db_proxy.port), http_port)
    del config["redis"]
    config["instance"]["total"] = 2
    config["distributed_lock"]["type"] = "postgres"
    path = write_config(workdir, config)
    return Node(name, key, workdir, db_proxy, db_proxy, http_port, path)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[list[Node], SimProcess]]:
    with PostgresServer() as pg:
        pg.create_database("quantmesh")
        sim_config = write_sim_config(tmp_path / "sim", volatility=0.0005, interval=0.2)
        with SimProcess(
            tmp_path / "sim",
            "--config",
            str(sim_config),
            api_key=KEYS[0][0],
            api_secret=KEYS[0][1],
            extra_keys=KEYS[1:],
        ) as sim:
            nodes = [
                pg_node(f"node-{i + 1}", key, tmp_path, sim.port, pg) for i, key in enumerate(KEYS)
            ]
            try:
                yield nodes, sim
            finally:
                with contextlib.suppress(Exception):  # for a post-mortem, beside the logs
                    (tmp_path / "orders.json").write_text(json.dumps(sim.orders(), indent=1))
                for node in nodes:
                    node.close()
                    (node.workdir / "stderr.log").write_text(node.stderr())


@pytest.mark.timeout(150)
def test_a_fleet_on_postgres_alone_takes_over_a_killed_owner_and_places_nothing_twice(
    fleet: tuple[list[Node], SimProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    nodes, sim = fleet
    started = time.monotonic()
    for node in nodes:
        node.start()
    for symbol in SYMBOLS:
        wait_owner(nodes, symbol, 60)
    for node in nodes:
        status = node.status()
        assert status is not None and status["lock"]["backend"] == "postgres", status
    time.sleep(4)  # both symbols trade for a while: orders open, some fill

    victim = owner_of(nodes, "ETH/USDT")
    assert victim is not None
    survivor = next(n for n in nodes if n is not victim)
    lost = victim.trading()
    placed_before = len(sim.orders())
    killed = time.monotonic()
    victim.kill()
    took: dict[str, float] = {}
    for symbol in sorted(lost):
        owner, _ = wait_owner(nodes, symbol, FAILOVER_BOUND + 10, other_than=victim)
        assert owner is survivor
        took[symbol] = time.monotonic() - killed
    time.sleep(4)  # the survivor trades every symbol now
    assert survivor.trading() == set(SYMBOLS)
    assert (survivor.metric("quantmesh_failovers_total") or 0) >= len(lost)
    code = survivor.stop()

    orders, actions = sim.orders(), sim.actions()
    with capsys.disabled():
        print(
            f"\npostgres fleet: {len(orders)} orders ({len(orders) - placed_before} after the "
            "kill), "
            + ", ".join(f"{s} taken over in {t:.1f} s" for s, t in took.items())
            + f" (bound {FAILOVER_BOUND:.1f} s), {time.monotonic() - started:.0f} s in all"
        )
    assert code == 0, survivor.stderr()[-3000:]
    assert len(orders) > placed_before, "nothing was placed after the take-over"
    assert open_overlaps(orders) == []
    assert double_buys(orders) == []
    assert double_sells(orders) == []
    assert interleavings(actions, 1.5) == {}
    assert all(seconds <= FAILOVER_BOUND for seconds in took.values()), took
