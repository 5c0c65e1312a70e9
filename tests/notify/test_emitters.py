"""The components that emit events, each with a recording notifier: the service (started,
stopped), the failover lock (halted, recovered), the write buffer (outage began, ended),
the coordinator (take-over, in a fleet on a real Redis), the trader (round trips,
rejections)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.errors import StorageUnavailable
from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.lock.failover import FailoverLock
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.metered import MeteredLock
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.buffer import BufferedRepository
from quantmesh.trading.trader import Trader
from quantmesh.wiring import assemble
from tests.coordination.support import CHECK, TTL, Instances
from tests.lock.test_failover import Backend
from tests.servers.proxy import TcpProxy
from tests.servers.redis import RedisServer
from tests.storage.support import fill
from tests.storage.test_buffer_faults import Outage, sqlite_buffer
from tests.trading.support import SETTINGS, SYMBOL, make_exchange, make_repository, until

from .support import Recorder

pytestmark = pytest.mark.timeout(30)
ETH = "ETH/USDT"


class RecordingService(Recorder):
    """A recording notifier the service starts and closes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def close(self, *, drain: bool = True) -> None:
        self.calls.append(f"close after {len(self.events)} events, drain {drain}")


async def test_the_service_says_it_started_and_why_it_stopped(tmp_path: Path) -> None:
    notifier = RecordingService()
    service = assemble(
        [SETTINGS],
        exchange=make_exchange(tmp_path),
        repository=make_repository(tmp_path),
        locker=NopLock(),
        metrics=Metrics(),
        shutdown_grace=1.0,
        notifier=notifier,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await until(lambda: notifier.kinds() == ["instance_started"])
    started = notifier.events[0]
    assert started.data == {"symbols": [SYMBOL], "role": "master"} and started.level == "info"
    stop.set()
    await asyncio.wait_for(task, 10)
    assert notifier.kinds() == ["instance_started", "instance_stopped"]
    stopped = notifier.events[1]
    assert stopped.data == {"reason": "stopped on request", "failed": {}}
    assert stopped.level == "info"
    assert notifier.calls == ["start", "close after 2 events, drain True"]  # told, then closed


async def test_a_service_whose_symbols_all_failed_says_so_critically(tmp_path: Path) -> None:
    notifier = RecordingService()
    service = assemble(
        [replace(SETTINGS, grid=replace(SETTINGS.grid, symbol="NOPE/USDT"))],
        exchange=make_exchange(tmp_path),
        repository=make_repository(tmp_path),
        locker=NopLock(),
        metrics=Metrics(),
        notifier=notifier,
    )
    await asyncio.wait_for(service.run(asyncio.Event()), 10)
    stopped = notifier.events[-1]
    assert stopped.kind == "instance_stopped" and stopped.level == "critical"
    assert stopped.data["reason"] == "every symbol failed"
    assert "NOPE/USDT" in stopped.data["failed"]  # type: ignore[operator]


async def test_a_forced_exit_says_so_and_does_not_wait_for_the_queues(tmp_path: Path) -> None:
    notifier = RecordingService()
    service = assemble(
        [SETTINGS],
        exchange=make_exchange(tmp_path),
        repository=make_repository(tmp_path),
        locker=NopLock(),
        metrics=Metrics(),
        notifier=notifier,
    )
    task = asyncio.create_task(service.run(asyncio.Event()))
    await until(lambda: notifier.kinds() == ["instance_started"])
    task.cancel()  # what a second signal does
    with pytest.raises(asyncio.CancelledError):
        await task
    assert notifier.events[-1].data["reason"] == "forced exit before shutdown finished"
    assert notifier.calls[-1] == "close after 2 events, drain False"


async def test_the_lock_says_when_it_halts_and_when_it_recovers() -> None:
    backend, notifier = Backend(), Recorder()
    locker = FailoverLock(
        backend, fallback_mode="halt", health_check_interval=0.2, notifier=notifier
    )
    try:
        await locker.start()
        assert notifier.events == []
        backend.down = True
        await until(lambda: locker.state == "halted")
        await asyncio.sleep(0.5)  # more failed checks: still one message
        assert notifier.kinds() == ["lock_halted"]
        halted = notifier.events[0]
        assert halted.scope == "fleet" and halted.level == "critical"
        assert halted.data == {"mode": "halted", "reason": "backend down"}
        backend.down = False
        await until(lambda: locker.state == "distributed")
    finally:
        await locker.close()
    assert notifier.kinds() == ["lock_halted", "lock_recovered"]
    recovered = notifier.events[1]
    assert recovered.data["previous_mode"] == "halted"
    assert 0.4 <= recovered.data["down_seconds"] < 5  # type: ignore[operator]


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[tuple[BufferedRepository, Recorder]]:
    notifier = Recorder()
    repository = sqlite_buffer(tmp_path, notifier=notifier)
    await repository.start()
    yield repository, notifier
    await repository.close()


async def test_the_write_buffer_says_when_an_outage_began_and_ended_with_counts(
    buffer: tuple[BufferedRepository, Recorder],
) -> None:
    repository, notifier = buffer
    outage = Outage(repository.inner)
    outage.error = StorageUnavailable("save_fills: connection to postgresql://u:pw@db/q refused")
    for trade in ("t1", "t2", "t3"):
        await repository.save_fill(fill(trade))
    assert notifier.kinds() == ["db_outage_began"]
    began = notifier.events[0]
    assert began.data["operation"] == "save_fills" and "pw" not in str(began.data["error"])
    with pytest.raises(StorageUnavailable):
        await repository.flush()  # still down: nothing replayed, no end
    assert notifier.kinds() == ["db_outage_began"]
    outage.error = None
    assert await repository.flush() == 3
    assert notifier.kinds() == ["db_outage_began", "db_outage_ended"]
    ended = notifier.events[1]
    assert (ended.data["buffered"], ended.data["replayed"]) == (3, 3)
    await repository.save_fill(fill("t4"))  # the database is back: nothing to tell
    assert len(notifier.events) == 2


@pytest.mark.usefixtures("redis")
async def test_a_take_over_is_told_once_by_the_new_owner_and_a_hand_back_not_at_all(
    instances: Instances, redis_server: RedisServer
) -> None:
    with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        master = instances.start("m", proxy.port)
        await until(lambda: master.trading() == {ETH})
        standby = instances.start("s", redis_server.port, role="standby")
        told = {"m": Recorder(), "s": Recorder()}
        for name, node in (("m", master), ("s", standby)):
            records = node.coordinator._records  # the part of the coordinator that tells
            assert records is not None
            records._notifier = told[name]
        await until(lambda: standby.coordinator.registered.is_set())
        await asyncio.sleep(3 * CHECK)
        proxy.blackhole()  # the master can no longer renew its lease
        cut = time.monotonic()
        await until(lambda: standby.trading() == {ETH}, timeout=TTL + 2 * CHECK + 3)
        assert told["s"].kinds() == ["symbol_taken_over"]
        taken = told["s"].events[0]
        assert taken.symbol == ETH and taken.data["previous_owner"] == "m"
        unowned = taken.data["unowned_seconds"]
        assert isinstance(unowned, float) and 0 < unowned <= time.monotonic() - cut + TTL
        proxy.heal()  # the standby hands the symbol back, released: no take-over
        await until(lambda: master.trading() == {ETH}, timeout=3 * TTL + 3)
        await asyncio.gather(master.close(), standby.close())
    assert told["m"].events == [] and len(told["s"].events) == 1


async def test_the_trader_tells_of_round_trips_and_rejected_orders(tmp_path: Path) -> None:
    notifier = Recorder()
    for balance, kinds in ((Decimal(100000), {"round_trip"}), (Decimal(1), {"order_rejected"})):
        directory = tmp_path / str(balance)
        directory.mkdir()
        exchange = make_exchange(directory, {"USDT": balance})
        repository = make_repository(directory)
        await exchange.start()
        await repository.start()
        metrics = Metrics()
        trader = Trader(
            SETTINGS,
            exchange=exchange,
            repository=repository,
            locker=MeteredLock(NopLock(), metrics=metrics, purpose="order"),
            lock_keys=LockKeys("simulated"),
            metrics=metrics,
            notifier=notifier,
        )
        task = asyncio.create_task(trader.run())
        try:
            await until(trader.ready.is_set)
            await trade_a_round_trip(exchange, notifier, kinds)
        finally:
            trader.stop_placing()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await exchange.close()
            await repository.close()
    trips = [e for e in notifier.events if e.kind == "round_trip"]
    assert len(trips) == 1 and trips[0].data["level"] == 0 and trips[0].symbol == SYMBOL
    rejected = [e for e in notifier.events if e.kind == "order_rejected"]
    assert rejected and all(e.symbol == SYMBOL for e in rejected)


async def trade_a_round_trip(
    exchange: SimulatedExchange, notifier: Recorder, kinds: set[str]
) -> None:
    exchange.set_price(SYMBOL, Decimal(2001))
    await asyncio.sleep(0.3)
    exchange.set_price(SYMBOL, Decimal(1999))  # fills the buy at 2000
    await asyncio.sleep(0.3)
    exchange.set_price(SYMBOL, Decimal(2011))  # fills the sell at 2010
    await until(lambda: kinds <= set(notifier.kinds()))
