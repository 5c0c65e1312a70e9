"""Membership heartbeats and ownership records in PostgreSQL and MariaDB (``SqlFleet``):
the behaviour every fleet store shares (the tests of ``test_fleet_etcd``, run here once
per database), what only the database does, and two coordinators whose fleet and
ownership leases are both in the database - no Redis, no etcd."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.coordination.allocation import Member
from quantmesh.coordination.coordinator import Coordinator, member_of
from quantmesh.coordination.fleet_sql import SqlFleet, build_sql_fleet
from quantmesh.coordination.membership import FleetStore
from quantmesh.errors import InstanceIdInUse, LockUnavailable
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.sql import SqlLock
from quantmesh.observability.metrics import Metrics
from tests.lock.backends import SqlBackend, start_again
from tests.lock.conftest import lock_mariadb, lock_postgres

# The tests every store passes, collected here with this module's ``store``.
from .test_fleet_etcd import (
    BTC,
    ETH,
    ME,
    test_a_former_owner_cannot_overwrite_its_successors_record,
    test_a_lapsed_entry_with_the_same_id_is_taken_over,
    test_a_late_refresh_cannot_undo_a_release,
    test_a_second_live_process_with_the_same_id_is_refused,
    test_leave_drops_only_our_own_entry,
    test_members_are_listed_until_their_heartbeat_lapses,
    test_owner_records_keep_a_symbol_on_its_database,
    test_owner_records_return_the_previous_owner,
    test_the_store_down_fails_closed,
    trade,
    wait_for,
)

__all__ = [
    "lock_mariadb",
    "lock_postgres",
    "test_a_former_owner_cannot_overwrite_its_successors_record",
    "test_a_lapsed_entry_with_the_same_id_is_taken_over",
    "test_a_late_refresh_cannot_undo_a_release",
    "test_a_second_live_process_with_the_same_id_is_refused",
    "test_leave_drops_only_our_own_entry",
    "test_members_are_listed_until_their_heartbeat_lapses",
    "test_owner_records_keep_a_symbol_on_its_database",
    "test_owner_records_return_the_previous_owner",
    "test_the_store_down_fails_closed",
]


@dataclass
class SqlStore:
    """Fleets on one database (``Store`` of ``test_fleet_etcd``): expiry on the server's
    clock to the microsecond, so a short ttl lapses at once."""

    backend: SqlBackend
    short: float = 0.3
    lapse: float = 0.4
    max_left: float = 1.0
    engines: list[AsyncEngine] = field(default_factory=list)

    def fleet(self, member: Member = ME, ttl: float = 1.0, port: int | None = None) -> FleetStore:
        engine = self.backend.engine(port, pool=2)
        self.engines.append(engine)
        return build_sql_fleet(engine, prefix="quantmesh:lock:", exchange="binance",
                               me=member, ttl=ttl)  # fmt: skip


@pytest.fixture(params=["postgres", "mysql"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SqlStore]:
    """Each database on its session's server, emptied; the engines it made are disposed."""
    server = request.getfixturevalue(
        f"lock_{'postgres' if request.param == 'postgres' else 'mariadb'}"
    )
    backend = SqlBackend(request.param, server)
    await backend.clear()
    made = SqlStore(backend)
    try:
        yield made
    finally:
        for engine in made.engines:
            await engine.dispose()
        await backend.close()


# the database only ---------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_records_keep_the_servers_time_and_a_forget_command(store: SqlStore) -> None:
    fleet = store.fleet(ttl=2.0)
    stored = await fleet.record_owner(ETH, "held", 5, 1.0)
    record = await fleet.owner(ETH)
    assert record is not None and record.until is not None
    assert 1.9 < record.until - stored.now <= 2.0  # the server's clock, to the microsecond
    released = await fleet.record_owner(ETH, "released", 5, 1.0)
    record = await fleet.owner(ETH)
    assert record is not None and record.until is not None
    assert record.until == pytest.approx(released.now, abs=1e-5)
    command = fleet.forget_command(ETH)
    await store.backend.execute(command.replace(":", r"\:"))  # as written, no parameters
    assert await fleet.owner(ETH) is None


@pytest.mark.timeout(40)
async def test_records_survive_a_database_crash_and_the_fleet_fails_closed_meanwhile(
    store: SqlStore,
) -> None:
    fleet = store.fleet()
    assert (await fleet.heartbeat()).ok
    assert (await fleet.record_owner(ETH, "released", 3, 1.0)).stored
    store.backend.server.kill()
    try:
        with pytest.raises(LockUnavailable):
            await fleet.record_owner(ETH, "held", 4, 1.0)
        with pytest.raises(LockUnavailable):
            await fleet.heartbeat()
        with pytest.raises(LockUnavailable):
            await fleet.members()
    finally:
        start_again(store.backend.server)
    record = await fleet.owner(ETH)
    assert record is not None and (record.state, record.fence) == ("released", 3)
    assert (await fleet.heartbeat()).ok
    assert [m.id for m in await fleet.members()] == ["node-1"]


@pytest.mark.timeout(10)
async def test_unreadable_records_and_entries_are_left_out(store: SqlStore) -> None:
    one = store.fleet()
    base = "quantmesh:lock:{fleet:binance}"
    for name, data in ((f"{base}:owners/{BTC}", "x"), (f"{base}:members/node-9", '{"id": 9}')):
        await store.backend.execute(
            "INSERT INTO lock_leases (name, token, fence, expires_us, data) "
            "VALUES (:name, 't', 0, 9000000000000000, :data)",
            name=name,
            data=data,
        )
    assert await one.owners() == {}
    garbled = await one.record_owner(BTC, "held", 8, 2.0)  # overwritten, not a crash
    assert garbled.stored and garbled.previous is None
    await one.heartbeat()
    assert [m.id for m in await one.members()] == ["node-1"]


# the coordinator on the database alone ---------------------------------------------------


def coordinator_on(
    backend: SqlBackend, name: str, made: list[SqlLock | AsyncEngine]
) -> Coordinator:
    """A coordinator whose fleet and ownership leases are both in the database; what it
    opened goes into ``made``, to close."""
    fleet_engine = backend.engine(pool=2)
    lock = SqlLock(backend.engine(pool=4))
    made += [fleet_engine, lock]
    me = member_of(name, "master", (ETH,))
    fleet = SqlFleet(fleet_engine, prefix="quantmesh:lock:", exchange="binance", me=me, ttl=2.0)
    return Coordinator(
        me,
        metrics=Metrics(),
        fleet=fleet,
        locker=lock,
        keys=LockKeys("binance", "symbol"),
        lease_ttl=2.0,
        check_interval=0.2,
    )


async def _close(made: list[SqlLock | AsyncEngine]) -> None:
    for opened in made:
        await (opened.close() if isinstance(opened, SqlLock) else opened.dispose())


@pytest.mark.timeout(20)
async def test_coordinators_on_the_database_trade_a_symbol_one_at_a_time(store: SqlStore) -> None:
    made: list[SqlLock | AsyncEngine] = []
    a, b = coordinator_on(store.backend, "a", made), coordinator_on(store.backend, "b", made)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            runs = [tasks.create_task(c.run()) for c in (a, b)]
            trading_a = tasks.create_task(trade(a, stop_a))

            async def a_owns() -> bool:
                return a.owned == {ETH}

            await wait_for(a_owns, 5.0)
            trading_b = tasks.create_task(trade(b, stop_b))
            await asyncio.sleep(1.0)
            assert a.owned == {ETH} and b.owned == set()
            assert {m.id for m in b.members} == {"a", "b"}
            stop_a.set()  # a clean hand-back: no failover, b takes it at its next check
            await trading_a

            async def b_owns() -> bool:
                return b.owned == {ETH}

            assert await wait_for(b_owns, 2.0) < 1.0
            assert not b.failovers
            stop_b.set()
            await trading_b
            for run in runs:
                run.cancel()  # a cancelled child ends the group without an error
    finally:
        await _close(made)


@pytest.mark.timeout(20)
async def test_a_coordinator_with_a_live_instances_id_refuses_to_run(store: SqlStore) -> None:
    made: list[SqlLock | AsyncEngine] = []
    first = coordinator_on(store.backend, "a", made)
    second = coordinator_on(store.backend, "a", made)
    try:
        running = asyncio.create_task(first.run())
        await asyncio.wait_for(first.registered.wait(), 5.0)
        with pytest.raises(InstanceIdInUse):
            await asyncio.wait_for(second.run(), 8.0)  # it waits out the entry, renewed
        assert not running.done()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    finally:
        await _close(made)
