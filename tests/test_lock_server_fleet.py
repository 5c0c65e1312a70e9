"""A fleet on one lock server, no Redis anywhere: two real ``quantmesh run`` processes
configured with the same symbols share the lock server, one PostgreSQL and the exchange
simulator - on etcd (``distributed_lock.type: etcd``), or on their database alone,
PostgreSQL or MariaDB (``distributed_lock.type: postgres`` or ``mysql``: their grids,
locks, membership and ownership records in one database). The chaos test's faults that do not depend on the lock server, one after
another (``tests/chaos/faults.py``): the owner of ETH killed with SIGKILL (and started
again), the owner of BTC frozen past its lease, then the owner of ETH cut off its lock
server (on the database, that is its database too). Each time the other instance takes
the symbols over once the leases lapse (etcd expires them; on the database they end by
its clock), and the simulator's records show no order placed twice (no two orders open at
once on one symbol, side and price; no level bought or sold twice in a row; no id placed
again after it filled; no two instances alternating on a symbol) and no request accepted
after the lease it was sent under had ended.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.faults import STARTUP_ALLOWANCE, Faults
from tests.chaos.harness import CHECK_INTERVAL, LEASE_TTL, Node, node_config, sim_fleet
from tests.chaos.invariants import (
    double_buys,
    double_sells,
    interleavings,
    late_actions,
    open_overlaps,
    reused_after_fill,
)
from tests.cli.support import write_config
from tests.exchange.sim.server.support import EXTRA_KEYS, SimProcess
from tests.servers.etcd import EtcdServer
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import TcpProxy
from tests.support import free_port

pytestmark = pytest.mark.slow
KEYS = (("fleet-key-1", "fleet-secret-1"), EXTRA_KEYS[0])


@dataclass(frozen=True)
class LockServer:
    """What differs between the fleets: the lock's server, a node's settings for it, and
    how soon a take-over must come."""

    name: str  # ``distributed_lock.type``, and the lock backend ``/api/status`` names
    # the lock's own server beside the database, started under the test's directory: its
    # port, or None when the lock is on the database
    start: Callable[[Path], AbstractContextManager[int | None]]
    # a node's settings for the lock, given the port of its loopback proxy to the lock's
    # server (its database proxy when the lock is on the database)
    configure: Callable[[dict[str, Any], int], None]
    failover_bound: float  # seconds from a fault to another instance trading a lost symbol
    database: str = "postgres"  # ``database.type``: where the grids are (PostgreSQL, MariaDB)


@contextlib.contextmanager
def etcd_member(root: Path) -> Iterator[int]:
    with EtcdServer(root / "etcd") as etcd:
        yield etcd.port


def etcd_endpoints(config: dict[str, Any], lock_port: int) -> None:
    config["etcd"] = {"endpoints": [f"127.0.0.1:{lock_port}"]}


def on_the_database(root: Path) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def database_dsn(config: dict[str, Any], lock_port: int) -> None:
    """Nothing to add: the lock is on ``database.dsn``."""


ETCD = LockServer(
    "etcd",
    start=etcd_member,
    configure=etcd_endpoints,
    # A take-over on etcd: the dead owner's lease (ceil(LEASE_TTL) s) expires at etcd's
    # next sweep (up to 0.5 s) and is seen at the next try (one check interval); then the
    # new owner loads the grid and reconciles with the exchange.
    failover_bound=LEASE_TTL + 0.5 + CHECK_INTERVAL + STARTUP_ALLOWANCE,
)
POSTGRES = LockServer(
    "postgres",
    start=on_the_database,
    configure=database_dsn,
    # A take-over on the database: the dead owner's lease ends exactly LEASE_TTL after its
    # last renewal (the server's clock) and is seen at the next try (one check interval);
    # then the new owner loads the grid and reconciles with the exchange.
    failover_bound=LEASE_TTL + CHECK_INTERVAL + STARTUP_ALLOWANCE,
)


MYSQL = LockServer(
    "mysql",
    start=on_the_database,
    configure=database_dsn,
    # as on PostgreSQL: the lease ends by the server's clock
    failover_bound=LEASE_TTL + CHECK_INTERVAL + STARTUP_ALLOWANCE,
    database="mysql",
)


def lock_node(
    server: LockServer,
    lock_port: int | None,
    db: PostgresServer | MariaDBServer,
    root: Path,
    name: str,
    key: tuple[str, str],
    sim_port: int,
) -> Node:
    """One of two instances on the chaos harness's settings, without Redis: its grids in
    ``db`` through a loopback proxy of its own (the ``db_proxy`` slot), its lock and
    fleet through another to the lock's server (the ``redis_proxy`` slot; the same proxy
    when the lock is on the database)."""
    workdir = root / name
    workdir.mkdir(parents=True)
    db_proxy = TcpProxy("127.0.0.1", db.port)
    db_proxy.start()
    lock_proxy = db_proxy
    if lock_port is not None:
        lock_proxy = TcpProxy("127.0.0.1", lock_port)
        lock_proxy.start()
    http_port = free_port()
    config = node_config(name, key, sim_port, 0, db.url("quantmesh", port=db_proxy.port), http_port)
    del config["redis"]
    config["database"]["type"] = server.database
    config["instance"]["total"] = 2
    config["distributed_lock"]["type"] = server.name
    server.configure(config, lock_proxy.port)
    path = write_config(workdir, config)
    return Node(name, key, workdir, lock_proxy, db_proxy, http_port, path)


@pytest.fixture(params=[ETCD, POSTGRES, MYSQL], ids=lambda server: server.name)
def server(request: pytest.FixtureRequest) -> LockServer:
    spec: LockServer = request.param
    return spec


@pytest.fixture
def fleet(server: LockServer, tmp_path: Path) -> Iterator[tuple[list[Node], SimProcess]]:
    database = PostgresServer() if server.database == "postgres" else MariaDBServer()
    with server.start(tmp_path) as lock_port, database as db:
        db.create_database("quantmesh")

        def node(name: str, key: tuple[str, str], sim_port: int) -> Node:
            return lock_node(server, lock_port, db, tmp_path, name, key, sim_port)

        with sim_fleet(tmp_path, KEYS, node) as (nodes, sim):
            yield nodes, sim


@pytest.mark.timeout(200)
def test_a_fleet_on_one_lock_server_survives_kills_freezes_and_partitions(
    server: LockServer,
    fleet: tuple[list[Node], SimProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    nodes, sim = fleet
    started = time.monotonic()
    faults = Faults(nodes, bound=server.failover_bound)
    faults.start()
    for node in nodes:
        status = node.status()
        assert status is not None and status["lock"]["backend"] == server.name, status
    placed_before = len(sim.orders())
    faults.kill_owner()
    faults.freeze_owner()
    # cut off its lock server (on the database: its database too, the lock's own server)
    faults.cut_off_owner("partition", lambda node: node.redis_proxy)
    codes = {node.name: node.stop() for node in nodes}

    orders, actions = sim.orders(), sim.actions()
    late = late_actions(actions, faults.leaseless)
    with capsys.disabled():
        print(
            f"\n{server.name} fleet: {len(orders)} orders ({len(orders) - placed_before} after "
            f"the first fault), {time.monotonic() - started:.0f} s in all\n"
            + faults.report()
            + f"\nrequests accepted after their lease ended: {len(late)}"
        )
    assert all(code == 0 for code in codes.values()), codes
    assert len(orders) > placed_before, "nothing was placed after the faults"
    assert open_overlaps(orders) == []
    assert double_buys(orders) == []
    assert double_sells(orders) == []
    assert reused_after_fill(orders) == []
    assert late == [], late
    assert interleavings(actions, 1.5) == {}
    assert faults.findings == []
