"""Ownership end to end in one process: services sharing a real lock server (Redis and
etcd: each test runs on both, ``fleet_server``), each with its own exchange and database.
Static contention, standby take-over and hand-back, dynamic sharing, partitions, fencing,
the lock server down, and instance id uniqueness. The core four (a hand-over on a clean
stop, a take-over after a lease lapsed, fencing, the server down) run on the database
locks too (PostgreSQL and MariaDB, ``EVERY_SERVER``), where the server going away is the
database going away."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.exchange.sim.simulated import SimulatedExchange
from tests.servers.proxy import TcpProxy
from tests.trading.support import make_repository, until

from .conftest import EVERY_SERVER, FleetServer
from .support import CHECK, TTL, Instance, Instances


def waiting_for(instance: Instance) -> list[str]:
    """Whom ``instance`` waits for, per symbol (the ``waiting_for`` of its status)."""
    waiting = instance.coordinator.status()["waiting_for"]
    assert isinstance(waiting, dict)
    return [str(owner) for owner in waiting.values()]


ETH = "ETH/USDT"
# Runs on Redis only: what these show of a lock server (ids, heartbeats, allocation over
# the live members) tests/coordination/test_fleet_etcd.py shows of etcd.
REDIS_ONLY = pytest.mark.parametrize("fleet_server", ["redis"], indirect=True)


async def close_all(*instances: Instance) -> None:
    await asyncio.gather(*(i.close() for i in instances))


@EVERY_SERVER
async def test_two_masters_with_one_symbol_trade_it_one_at_a_time(
    instances: Instances, fleet_server: FleetServer
) -> None:
    a = instances.start("a", fleet_server.port)
    await until(lambda: a.trading() == {ETH})
    b = instances.start("b", fleet_server.port)
    await until(lambda: "a" in waiting_for(b))
    await asyncio.sleep(3 * CHECK)
    assert a.trading() == {ETH} and b.trading() == set()
    # a clean stop hands the symbol over at b's next check, not after the lease lapses
    started = time.monotonic()
    await a.close()
    await until(lambda: b.trading() == {ETH}, timeout=TTL)
    assert time.monotonic() - started < TTL
    assert b.sample("quantmesh_failovers_total", symbol=ETH) == 0  # a hand-over, no failover
    await b.close()


@EVERY_SERVER
async def test_a_standby_takes_over_a_cut_off_master_and_hands_back(
    instances: Instances, fleet_server: FleetServer
) -> None:
    with TcpProxy("127.0.0.1", fleet_server.port) as proxy:
        master = instances.start("m", proxy.port)
        await until(lambda: master.trading() == {ETH})
        standby = instances.start("s", fleet_server.port, role="standby")
        await until(lambda: standby.coordinator.registered.is_set())
        await asyncio.sleep(3 * CHECK)
        assert standby.trading() == set() and standby.coordinator.status()["wanted"] == []

        proxy.blackhole()  # the master can neither renew its lease nor its membership
        cut = time.monotonic()
        await until(lambda: master.trading() == set(), timeout=TTL + 1)
        assert time.monotonic() - cut <= TTL  # it stopped before its lease could lapse
        await until(lambda: standby.trading() == {ETH}, timeout=TTL + 2 * CHECK + 3)
        took = time.monotonic() - cut
        assert took <= TTL + CHECK + 3, took  # lease TTL + one check, plus the start
        assert standby.sample("quantmesh_failovers_total", symbol=ETH) == 1
        assert master.sample("quantmesh_ownership_changes_total", symbol=ETH, event="lost") == 1
        assert standby.coordinator.failovers[-1]["from"] == "m"

        proxy.heal()  # the master is back: the standby stops, releases, the master trades
        await until(lambda: master.trading() == {ETH}, timeout=3 * TTL + 3)
        assert standby.trading() == set()
        assert (
            standby.sample("quantmesh_ownership_changes_total", symbol=ETH, event="released") == 1
        )
        await close_all(master, standby)


@REDIS_ONLY
async def test_a_standby_started_first_leaves_a_master_starting_beside_it_alone(
    instances: Instances, fleet_server: FleetServer
) -> None:
    standby = instances.start("s", fleet_server.port, role="standby")
    await until(lambda: standby.coordinator.registered.is_set())
    await asyncio.sleep(TTL / 2)  # the master's start-up is slower
    master = instances.start("m", fleet_server.port)
    await until(lambda: master.trading() == {ETH}, timeout=TTL + 3)
    await asyncio.sleep(TTL)  # past the standby's settling time
    assert standby.trading() == set()
    assert standby.sample("quantmesh_ownership_changes_total", symbol=ETH, event="acquired") == 0
    await close_all(master, standby)


@REDIS_ONLY
async def test_dynamic_mode_shares_the_symbols_and_rebalances(
    instances: Instances, fleet_server: FleetServer
) -> None:
    symbols = ("ETH/USDT", "BTC/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ADA/USDT")
    a = instances.start("a", fleet_server.port, symbols, mode="dynamic")
    await until(lambda: a.trading() == set(symbols), timeout=5)
    b = instances.start("b", fleet_server.port, symbols, mode="dynamic")
    # one at a time: the migrations of in-process SQLite databases must not overlap
    await until(lambda: b.coordinator.registered.is_set())
    c = instances.start("c", fleet_server.port, symbols, mode="dynamic")
    fleet = (a, b, c)

    def shared() -> bool:
        owned = [i.trading() for i in fleet]
        return (
            all(owned)
            and sum(map(len, owned)) == len(symbols)
            and set().union(*owned) == set(symbols)
        )

    await until(shared, timeout=3 * TTL + 3)
    # at no point after this do two of them trade one symbol
    for _ in range(10):
        owned = [i.coordinator.owned for i in fleet]
        assert sum(map(len, owned)) <= len(symbols)
        await asyncio.sleep(CHECK)
    await c.close()  # c leaves: its symbols move to a and b
    await until(lambda: a.trading() | b.trading() == set(symbols), timeout=3 * TTL + 3)
    assert not a.trading() & b.trading()
    await close_all(a, b)


@REDIS_ONLY
async def test_a_second_live_instance_with_the_same_id_refuses_to_start(
    instances: Instances, fleet_server: FleetServer
) -> None:
    first = instances.start("one", fleet_server.port, instance_id="node")
    await until(lambda: first.trading() == {ETH})
    second = instances.start("two", fleet_server.port, instance_id="node")
    assert second.task is not None
    result = await asyncio.wait_for(second.task, TTL + 5)
    assert result.fatal is not None  # type: ignore[attr-defined]
    assert "instance id 'node' is in use by a live instance" in result.fatal  # type: ignore[attr-defined]
    assert second.trading() == set() and first.trading() == {ETH}
    await first.close()


async def test_a_restart_with_the_same_id_waits_for_the_old_entry_to_lapse(
    instances: Instances, fleet_server: FleetServer
) -> None:
    with TcpProxy("127.0.0.1", fleet_server.port) as proxy:
        old = instances.start("old", proxy.port, instance_id="node")
        await until(lambda: old.trading() == {ETH})
        proxy.cut()  # as good as killed, for Redis: nothing is renewed any more
        new = instances.start("new", fleet_server.port, instance_id="node")
        await until(lambda: new.trading() == {ETH}, timeout=2 * TTL + 3)
        assert new.service.result.fatal is None
        await close_all(old, new)


@EVERY_SERVER
async def test_a_former_owners_grid_writes_are_refused_after_a_take_over(
    instances: Instances, fleet_server: FleetServer, tmp_path: Path
) -> None:
    # One database for both (two engines on one SQLite file, as two hosts on one server).
    shared = tmp_path / "shared"
    shared.mkdir()
    with TcpProxy("127.0.0.1", fleet_server.port) as proxy:
        a = instances.start("a", proxy.port, repository=make_repository(shared))
        await until(lambda: a.trading() == {ETH})
        a_fence = a.service.traders[0]._fence()
        b = instances.start("b", fleet_server.port, repository=make_repository(shared))
        await until(lambda: "a" in waiting_for(b))

        proxy.blackhole()  # a is frozen, for the lock server: its lease lapses
        await until(lambda: b.trading() == {ETH}, timeout=TTL + CHECK + 5)
        b_fence = b.service.traders[0]._fence()
        assert b_fence > a_fence  # the server's fences only grow, across holders
        await until(lambda: a.trading() == set(), timeout=TTL)
        # a write a sends late, under its old fence, is refused: b's fence is on the grid
        former = a.service.repository
        assert await former.save_levels(ETH, [], a_fence) is False
        grid = await former.load_grid(ETH)
        assert grid is not None and grid.fence == b_fence
        await close_all(a, b)


@EVERY_SERVER
async def test_the_lock_server_down_halts_placing_until_it_is_back(
    instances: Instances, fleet_server: FleetServer
) -> None:
    with TcpProxy("127.0.0.1", fleet_server.port) as proxy:
        a = instances.start("a", proxy.port)
        await until(lambda: a.trading() == {ETH})
        exchange = a.service.exchange
        assert isinstance(exchange, SimulatedExchange)
        exchange.set_price(ETH, Decimal(2001))
        await until(lambda: len(exchange.engine.all_orders()) >= 1)

        proxy.cut()  # the lock server is gone (fallback_mode halt)
        await until(lambda: a.lock.state == "halted", timeout=3)
        health = a.lock.health()
        assert health.backend == fleet_server.kind and not a.lock.ready
        await until(lambda: a.trading() == set(), timeout=TTL + 1)  # its lease could not renew
        placed = len(exchange.engine.all_orders())
        for price in (1985, 1965, 1945):  # buys wanted below, sells above: none may go
            exchange.set_price(ETH, Decimal(price))
            await asyncio.sleep(3 * CHECK)
        assert len(exchange.engine.all_orders()) == placed

        proxy.heal()
        await until(lambda: a.lock.state == "distributed", timeout=3)
        await until(lambda: a.trading() == {ETH}, timeout=TTL + 3)
        await until(lambda: len(exchange.engine.all_orders()) > placed)
        await a.close()
