"""Membership heartbeats and ownership records on a real etcd, beside the Redis ``Fleet``:
the behaviour both stores share runs once per store (``store``: Redis, etcd); what only
etcd does (leases instead of a sweep, records outliving a restart) is tested on etcd."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from quantmesh.coordination.allocation import Member
from quantmesh.coordination.coordinator import Coordinator, member_of
from quantmesh.coordination.fleet import Fleet
from quantmesh.coordination.fleet_etcd import EtcdFleet
from quantmesh.coordination.membership import FleetStore
from quantmesh.errors import InstanceIdInUse, LockTimeout, LockUnavailable
from quantmesh.lock.etcd import EtcdGateway, EtcdLock
from quantmesh.lock.keys import LockKeys
from quantmesh.observability.metrics import Metrics
from tests.lock.conftest import etcd_server, make_client
from tests.servers.etcd import EtcdServer, request
from tests.support import free_port

__all__ = ["etcd_server"]  # the lock tests' session etcd, shared here

ETH, BTC = "ETH/USDT", "BTC/USDT"
ME = Member("node-1", "master", frozenset({ETH}))
BASE = "quantmesh:lock:{fleet:binance}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Store:
    """Fleets of one store on its server; ``lapse``: the longest a member with a ``short``
    ttl may stay listed after its last heartbeat; ``max_left``: the most a refusal may
    report for an entry of ttl 1 s."""

    name: str
    make: Callable[[int | None], Any]  # a client (on a port, or the server's)
    short: float
    lapse: float
    max_left: float
    clients: list[Any] = field(default_factory=list)

    def fleet(self, member: Member = ME, ttl: float = 1.0, port: int | None = None) -> FleetStore:
        client = self.make(port)
        self.clients.append(client)
        kind = Fleet if self.name == "redis" else EtcdFleet
        return kind(client, prefix="quantmesh:lock:", exchange="binance", me=member, ttl=ttl)


def _clear(server: EtcdServer) -> None:
    request(server.url, "/v3/kv/deleterange", {"key": "AA==", "range_end": "AA=="})


def _gateway(url: str) -> Callable[[int | None], EtcdGateway]:
    def make(port: int | None) -> EtcdGateway:
        at = url if port is None else f"http://127.0.0.1:{port}"
        return EtcdGateway([at], request_timeout=1.0, connect_timeout=1.0)

    return make


@pytest.fixture(params=["redis", "etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each store on its session's server, emptied; the clients it made are closed."""
    if request.param == "redis":
        port = request.getfixturevalue("redis_server").port
        made = Store("redis", lambda p: make_client(p or port), 0.3, 0.4, 1.0)
        client = made.make(None)
        made.clients.append(client)
        await client.flushall()
    else:
        server = request.getfixturevalue("etcd_server")
        _clear(server)
        # etcd's leases are whole seconds, and expired ones are revoked in a sweep
        made = Store("etcd", _gateway(server.url), 1.0, 3.0, 2.5)
    try:
        yield made
    finally:
        for client in made.clients:
            await (client.aclose() if made.name == "redis" else client.close())


@pytest.fixture
def etcd(etcd_server: EtcdServer) -> Iterator[EtcdServer]:
    _clear(etcd_server)
    yield etcd_server


@pytest.fixture
async def fleets(etcd: EtcdServer) -> AsyncIterator[Callable[..., EtcdFleet]]:
    gateways: list[EtcdGateway] = []

    def make(member: Member = ME, ttl: float = 1.0, url: str = etcd.url) -> EtcdFleet:
        gateway = EtcdGateway([url], request_timeout=1.0, connect_timeout=1.0)
        gateways.append(gateway)
        return EtcdFleet(gateway, prefix="quantmesh:lock:", exchange="binance", me=member, ttl=ttl)

    yield make
    for gateway in gateways:
        await gateway.close()


async def wait_for(check: Callable[[], Any], timeout: float) -> float:
    """Poll ``check()`` (awaited) until true; how long it took."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout, f"not true after {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


# both stores -------------------------------------------------------------------------------


@pytest.mark.timeout(15)
async def test_members_are_listed_until_their_heartbeat_lapses(store: Store) -> None:
    one = store.fleet()
    two = store.fleet(Member("node-2", "standby", frozenset({ETH, BTC})), store.short)
    assert (await one.heartbeat()).ok and (await two.heartbeat()).ok
    members = {m.id: m for m in await one.members()}
    assert set(members) == {"node-1", "node-2"}
    assert members["node-2"].role == "standby"
    assert members["node-2"].symbols == {ETH, BTC}

    async def lapsed() -> bool:
        assert (await one.heartbeat()).ok  # the live member stays
        return [m.id for m in await one.members()] == ["node-1"]

    assert await wait_for(lapsed, store.lapse + 1.0) >= store.short * 0.9


@pytest.mark.timeout(10)
async def test_a_second_live_process_with_the_same_id_is_refused(store: Store) -> None:
    first, second = store.fleet(), store.fleet()
    assert (await first.heartbeat()).ok
    refused = await second.heartbeat()
    assert not refused.ok
    assert refused.other is not None and refused.other["token"] == first.token
    assert 0 < refused.other_left <= store.max_left
    assert (await first.heartbeat()).ok  # the first keeps its place
    assert not (await second.heartbeat()).ok  # and the second stays refused while it lives
    assert [m.id for m in await second.members()] == ["node-1"]


@pytest.mark.timeout(15)
async def test_a_lapsed_entry_with_the_same_id_is_taken_over(store: Store) -> None:
    first, second = store.fleet(ttl=store.short), store.fleet()
    assert (await first.heartbeat()).ok

    async def registered() -> bool:
        return (await second.heartbeat()).ok

    await wait_for(registered, store.lapse + 1.0)
    assert not (await first.heartbeat()).ok  # the old process, thawed, is now the duplicate


@pytest.mark.timeout(10)
async def test_leave_drops_only_our_own_entry(store: Store) -> None:
    first, second = store.fleet(), store.fleet()
    await first.heartbeat()
    assert not await second.leave()
    assert [m.id for m in await first.members()] == ["node-1"]
    assert await first.leave()
    assert await first.members() == []
    assert (await second.heartbeat()).ok  # the id is free at once


@pytest.mark.timeout(10)
async def test_owner_records_return_the_previous_owner(store: Store) -> None:
    one = store.fleet()
    two = store.fleet(Member("node-2", "master", frozenset({ETH})))
    first = await one.record_owner(ETH, "held", 1_764_000_000_000_001, 1.5)
    assert first.stored and first.previous is None
    second = await two.record_owner(ETH, "held", 1_764_000_000_000_002, 2.5)
    previous = second.previous
    assert second.stored and previous is not None
    assert (previous.owner, previous.state, previous.fence, previous.since) == (
        "node-1",
        "held",
        1_764_000_000_000_001,  # fences survive exactly (no float rounding)
        1.5,
    )
    # a held record runs until a lease from now at the latest
    assert previous.until is not None
    assert second.now < previous.until <= second.now + store.max_left
    assert (await two.record_owner(ETH, "released", 1_764_000_000_000_002, 2.5)).stored
    records = await one.owners()
    assert records[ETH].owner == "node-2" and records[ETH].state == "released"
    assert set(records) == {ETH}
    assert await one.owner(BTC) is None


@pytest.mark.timeout(10)
async def test_a_former_owner_cannot_overwrite_its_successors_record(store: Store) -> None:
    old = store.fleet()
    new = store.fleet(Member("node-2", "master", frozenset({ETH})))
    await old.record_owner(ETH, "held", 100, 1.0)
    await new.record_owner(ETH, "held", 200, 2.0)
    refused = await old.record_owner(ETH, "released", 100, 1.0)
    assert not refused.stored and not refused.other_database
    assert refused.previous is not None and refused.previous.owner == "node-2"
    assert (await old.owners())[ETH].owner == "node-2"


@pytest.mark.timeout(10)
async def test_a_late_refresh_cannot_undo_a_release(store: Store) -> None:
    one = store.fleet()
    assert (await one.record_owner(ETH, "held", 100, 1.0)).stored
    assert (await one.record_owner(ETH, "held", 100, 1.0)).stored  # a refresh
    assert (await one.record_owner(ETH, "released", 100, 1.0)).stored
    late = await one.record_owner(ETH, "held", 100, 1.0)  # sent before, landed after
    assert not late.stored
    assert (await one.owners())[ETH].state == "released"


@pytest.mark.timeout(10)
async def test_owner_records_keep_a_symbol_on_its_database(store: Store) -> None:
    def of(name: str, database: str) -> FleetStore:
        return store.fleet(Member(name, "master", frozenset({ETH, BTC}), database))

    lite, pg1, pg2 = of("lite", "sqlite"), of("pg-1", "postgres"), of("pg-2", "mysql")
    assert (await lite.record_owner(ETH, "held", 10, 1.0)).stored
    refused = await pg1.record_owner(ETH, "held", 11, 2.0)  # from SQLite: no
    assert not refused.stored and refused.other_database
    assert refused.previous is not None
    assert (refused.previous.owner, refused.previous.shared) == ("lite", False)
    assert refused.previous.database == "sqlite"
    assert (await lite.record_owner(ETH, "released", 10, 1.0)).stored
    assert (await pg1.record_owner(ETH, "held", 12, 2.0)).other_database  # released: still no
    assert (await pg1.record_owner(BTC, "held", 20, 1.0)).stored
    moved = await pg2.record_owner(BTC, "held", 22, 2.0)  # between shared databases: yes
    assert moved.stored and not moved.other_database
    record = (await pg1.owners())[BTC]
    assert (record.owner, record.shared, record.database) == ("pg-2", True, "mysql")
    for fleet in (lite, pg1):
        await fleet.heartbeat()
    members = {m.id: m for m in await pg1.members()}
    assert (members["lite"].database, members["lite"].shared_database) == ("sqlite", False)


@pytest.mark.timeout(10)
async def test_the_store_down_fails_closed(store: Store) -> None:
    fleet = store.fleet(port=free_port())  # nothing listens there
    for call in (
        fleet.heartbeat,
        fleet.members,
        fleet.owners,
        lambda: fleet.owner(ETH),
        lambda: fleet.record_owner(ETH, "held", 1, 1.0),
    ):
        with pytest.raises(LockUnavailable):
            await call()


# etcd only -------------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_an_entry_lives_on_a_lease_of_the_ttl_that_a_heartbeat_renews(
    fleets: Callable[..., EtcdFleet], etcd: EtcdServer
) -> None:
    fleet = fleets(ttl=2.5)
    assert (await fleet.heartbeat()).ok
    kvs = request(etcd.url, "/v3/kv/range", {"key": _b64(f"{BASE}:members/node-1")})["kvs"]
    lease = kvs[0]["lease"]
    alive = request(etcd.url, "/v3/lease/timetolive", {"ID": lease})
    assert int(alive["grantedTTL"]) == 3  # whole seconds, up
    await asyncio.sleep(1.1)
    assert int(request(etcd.url, "/v3/lease/timetolive", {"ID": lease})["TTL"]) <= 2
    assert (await fleet.heartbeat()).ok
    assert int(request(etcd.url, "/v3/lease/timetolive", {"ID": lease})["TTL"]) >= 2
    assert await fleet.leave()
    assert int(request(etcd.url, "/v3/lease/timetolive", {"ID": lease})["TTL"]) == -1  # revoked


@pytest.mark.timeout(10)
async def test_our_entry_under_a_former_lease_is_moved_not_refused(
    fleets: Callable[..., EtcdFleet], etcd: EtcdServer
) -> None:
    fleet = fleets()
    # Our entry, under a lease this fleet does not hold (as after its lease lapsed, before
    # etcd deleted the entry).
    other = request(etcd.url, "/v3/lease/grant", {"TTL": 5})["ID"]
    info = {"id": "node-1", "token": fleet.token, "role": "master", "symbols": []}
    name = _b64(f"{BASE}:members/node-1")
    request(etcd.url, "/v3/kv/put", {"key": name, "value": _b64(json.dumps(info)), "lease": other})
    assert (await fleet.heartbeat()).ok
    kv = request(etcd.url, "/v3/kv/range", {"key": name})["kvs"][0]
    assert kv["lease"] != other
    assert json.loads(base64.b64decode(kv["value"]))["symbols"] == [ETH]


@pytest.mark.timeout(15)
async def test_owner_records_outlive_their_lease_and_their_owner(
    fleets: Callable[..., EtcdFleet],
) -> None:
    one, two = fleets(), fleets(Member("node-2", "master", frozenset({ETH})))
    assert (await one.heartbeat()).ok
    assert (await one.record_owner(ETH, "held", 7, 1.0)).stored
    held = await two.owner(ETH)
    assert held is not None and held.until is not None and held.until > time.time()
    # the owner stops (a crash: no release, no leave); its leases lapse, its record stays

    async def gone() -> bool:
        record = await two.owner(ETH)
        return (
            await two.members() == [] and record is not None and record.until is not None
            and record.until <= time.time()
        )  # fmt: skip

    await wait_for(gone, 4.0)
    records = await two.owners()
    assert (records[ETH].owner, records[ETH].state, records[ETH].fence) == ("node-1", "held", 7)
    taken = await two.record_owner(ETH, "held", 8, 2.0)
    assert taken.stored and taken.previous is not None and taken.previous.owner == "node-1"
    assert taken.previous.until is not None and taken.previous.until <= taken.now


@pytest.mark.timeout(20)
async def test_records_survive_an_etcd_restart(fleets: Callable[..., EtcdFleet]) -> None:
    with EtcdServer() as server:
        fleet = fleets(url=server.url)
        assert (await fleet.heartbeat()).ok
        assert (await fleet.record_owner(ETH, "released", 3, 1.0)).stored
        server.kill()
        with pytest.raises(LockUnavailable):
            await fleet.record_owner(ETH, "held", 4, 1.0)
        with pytest.raises(LockUnavailable):
            await fleet.heartbeat()
        server.start()
        record = await fleet.owner(ETH)
        assert record is not None and (record.state, record.fence) == ("released", 3)
        assert (await fleet.heartbeat()).ok
        assert [m.id for m in await fleet.members()] == ["node-1"]


@pytest.mark.timeout(10)
async def test_unreadable_records_and_entries_are_left_out(
    fleets: Callable[..., EtcdFleet], etcd: EtcdServer
) -> None:
    one = fleets()
    request(etcd.url, "/v3/kv/put", {"key": _b64(f"{BASE}:owners/{BTC}"), "value": _b64("x")})
    assert await one.owners() == {}
    garbled = await one.record_owner(BTC, "held", 8, 2.0)  # overwritten, not a crash
    assert garbled.stored and garbled.previous is None
    await one.heartbeat()
    name = _b64(f"{BASE}:members/node-9")
    request(etcd.url, "/v3/kv/put", {"key": name, "value": _b64('{"id": "node-9"}')})
    assert [m.id for m in await one.members()] == ["node-1"]


# the coordinator on etcd alone -------------------------------------------------------------


def coordinator_on(url: str, name: str, made: list[EtcdGateway | EtcdLock]) -> Coordinator:
    """A coordinator whose fleet and ownership leases are both on etcd; what it opened
    goes into ``made``, to close."""
    fleet_gateway = EtcdGateway([url], request_timeout=1.0, connect_timeout=1.0)
    lock = EtcdLock(EtcdGateway([url], request_timeout=1.0, connect_timeout=1.0))
    made += [fleet_gateway, lock]
    me = member_of(name, "master", (ETH,))
    fleet = EtcdFleet(fleet_gateway, prefix="quantmesh:lock:", exchange="binance", me=me, ttl=2.0)
    return Coordinator(
        me,
        metrics=Metrics(),
        fleet=fleet,
        locker=lock,
        keys=LockKeys("binance", "symbol"),
        lease_ttl=2.0,
        check_interval=0.2,
    )


async def trade(coordinator: Coordinator, stop: asyncio.Event) -> None:
    """Own ETH whenever it can, until ``stop``; a clean hand-back when stopped."""
    await coordinator.wait_wanted(ETH)
    while True:
        try:
            async with coordinator.own(ETH):
                await stop.wait()
                return
        except LockTimeout:
            await coordinator.retry_pause(ETH)


@pytest.mark.timeout(20)
async def test_coordinators_on_etcd_trade_a_symbol_one_at_a_time(etcd: EtcdServer) -> None:
    made: list[EtcdGateway | EtcdLock] = []
    a, b = coordinator_on(etcd.url, "a", made), coordinator_on(etcd.url, "b", made)
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
        for opened in made:
            await opened.close()


@pytest.mark.timeout(20)
async def test_a_coordinator_with_a_live_instances_id_refuses_to_run(etcd: EtcdServer) -> None:
    made: list[EtcdGateway | EtcdLock] = []
    first, second = coordinator_on(etcd.url, "a", made), coordinator_on(etcd.url, "a", made)
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
        for opened in made:
            await opened.close()
