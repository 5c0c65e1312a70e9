"""The service: traders in a task group, failure isolation, orderly shutdown."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from quantmesh import app, interpreter
from quantmesh.app import REPEAT_WINDOW, Service, serve
from quantmesh.coordination.coordinator import Claim
from quantmesh.errors import Disconnected, StorageUnavailable
from quantmesh.exchange.sim.simulated import SimMarket, SimulatedExchange
from quantmesh.grid.risk import InstanceLimits
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.buffer import BufferedRepository
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.trader import Trader, TraderSettings
from quantmesh.wiring import assemble

from .storage.support import order
from .trading.support import RULES, SETTINGS, SYMBOL, make_exchange, make_repository, until


def _service(
    tmp_path: Path,
    symbols: list[str],
    *,
    cancel_on_exit: bool = False,
    risk: InstanceLimits | None = None,
) -> Service:
    return assemble(
        [replace(SETTINGS, grid=replace(SETTINGS.grid, symbol=symbol)) for symbol in symbols],
        exchange=make_exchange(tmp_path),
        repository=make_repository(tmp_path),
        locker=NopLock(),
        metrics=Metrics(),
        shutdown_grace=2.0,
        cancel_on_exit=cancel_on_exit,
        risk=risk,
    )


def _trader(service: Service, symbol: str = SYMBOL) -> Trader | None:
    """The running trader of ``symbol``: built once the service owns the symbol."""
    return next((t for t in service.traders if t.symbol == symbol), None)


async def _ready_trader(service: Service, symbol: str = SYMBOL) -> Trader:
    await until(lambda: (t := _trader(service, symbol)) is not None and t.ready.is_set())
    trader = _trader(service, symbol)
    assert trader is not None
    return trader


async def _trade_until_orders(service: Service, stop: asyncio.Event) -> asyncio.Task[object]:
    task: asyncio.Task[object] = asyncio.create_task(service.run(stop))
    good = await _ready_trader(service)
    exchange = service.exchange
    exchange.set_price(SYMBOL, Decimal(2001))  # type: ignore[attr-defined]
    await until(lambda: good.book is not None and len(good.book.open_orders()) == 3)
    return task


async def test_one_failing_symbol_does_not_stop_the_others(tmp_path: Path) -> None:
    service = _service(tmp_path, [SYMBOL, "NOPE/USDT"])
    stop = asyncio.Event()
    task = await _trade_until_orders(service, stop)
    await until(lambda: "NOPE/USDT" in service.result.failed)
    assert "does not exist" in service.result.failed["NOPE/USDT"]
    assert (
        service.metrics.registry.get_sample_value("quantmesh_trader_up", {"symbol": "NOPE/USDT"})
        == 0
    )
    assert not task.done()
    stop.set()
    result = await asyncio.wait_for(task, 5)
    assert result.ok and set(result.failed) == {"NOPE/USDT"}  # type: ignore[attr-defined]


async def test_the_event_loop_waits_for_the_interpreter_lock_half_a_millisecond_at_most(
    tmp_path: Path,
) -> None:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # CPython's default
    try:
        await asyncio.wait_for(serve(_service(tmp_path, ["NOPE/USDT"])), 5)
        assert sys.getswitchinterval() == pytest.approx(interpreter.SWITCH_INTERVAL)
        assert interpreter.SWITCH_INTERVAL <= 0.0005
    finally:
        sys.setswitchinterval(before)


async def test_the_traders_start_up_is_frozen_once_every_one_is_ready_and_thawed_as_they_leave(
    tmp_path: Path,
) -> None:
    gc.unfreeze()  # whatever an earlier test froze
    service = _service(tmp_path, [SYMBOL, "NOPE/USDT"])  # one fails and leaves at start
    service.freeze_started_heap()  # as serve() does (tune_process)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        first = await _ready_trader(service)
        await until(lambda: "NOPE/USDT" in service.result.failed)
        await until(lambda: gc.get_freeze_count() > 0)  # all ready: what they hold is frozen
        assert first.ready.is_set()
        frozen = gc.get_freeze_count()
        service.exchange.set_price(SYMBOL, Decimal(2001))  # type: ignore[attr-defined]
        await until(lambda: first.book is not None and len(first.book.open_orders()) == 3)
        assert gc.get_freeze_count() <= frozen  # trading freezes nothing more (frees some)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert gc.get_freeze_count() == 0  # the traders left: what they held is collectable


async def test_the_service_ends_when_every_symbol_failed(tmp_path: Path) -> None:
    service = _service(tmp_path, ["NOPE/USDT", "NADA/USDT"])
    result = await asyncio.wait_for(service.run(asyncio.Event()), 5)
    assert not result.ok
    assert set(result.failed) == {"NOPE/USDT", "NADA/USDT"}


async def test_shutdown_leaves_orders_open_by_default(tmp_path: Path) -> None:
    service = _service(tmp_path, [SYMBOL])
    stop = asyncio.Event()
    task = await _trade_until_orders(service, stop)
    stop.set()
    await asyncio.wait_for(task, 5)
    exchange = make_exchange(tmp_path)  # the persisted book of the simulated exchange
    await exchange.start()
    try:
        assert len(exchange.engine.open_orders(SYMBOL)) == 3
    finally:
        await exchange.close()


async def test_the_instance_limits_are_watched_while_the_service_runs(tmp_path: Path) -> None:
    """Three open buys of 30 USDT are over a 60 USDT limit: the service's watch holds the
    symbol (no board here: the hold lasts as long as the trader) and its buys go."""
    service = _service(tmp_path, [SYMBOL], risk=InstanceLimits(max_total_position=Decimal(60)))
    stop = asyncio.Event()
    task = await _trade_until_orders(service, stop)
    trader = await _ready_trader(service)
    await until(lambda: trader.control is not None and trader.control.mode == "stop_buys")
    assert trader.control is not None and trader.control.actor == "risk:max_total_position"
    service.exchange.set_price(SYMBOL, Decimal(2001))  # type: ignore[attr-defined]
    await until(lambda: trader.book is not None and trader.book.open_orders() == [])
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_cancel_on_exit_cancels_and_records_every_open_order(tmp_path: Path) -> None:
    service = _service(tmp_path, [SYMBOL], cancel_on_exit=True)
    stop = asyncio.Event()
    task = await _trade_until_orders(service, stop)
    stop.set()
    await asyncio.wait_for(task, 5)
    exchange = make_exchange(tmp_path)
    await exchange.start()
    repository = make_repository(tmp_path)
    await repository.start()
    try:
        assert exchange.engine.open_orders(SYMBOL) == []
        assert await repository.get_open_orders(SYMBOL) == []
    finally:
        await exchange.close()
        await repository.close()


async def test_first_signal_stops_gracefully(tmp_path: Path) -> None:
    service = _service(tmp_path, [SYMBOL])
    task = asyncio.create_task(serve(service))
    await _ready_trader(service)
    os.kill(os.getpid(), signal.SIGTERM)
    result = await asyncio.wait_for(task, 5)
    assert result.ok and result.failed == {}


async def test_the_same_signal_twice_at_once_is_one_stop_request(tmp_path: Path) -> None:
    """Some supervisors deliver SIGTERM twice (GNU timeout: to the process and its group)."""
    service = _service(tmp_path, [SYMBOL])
    task = asyncio.create_task(serve(service))
    await _ready_trader(service)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
    result = await asyncio.wait_for(task, 5)
    assert result.fatal is None
    assert result.ok


async def test_the_same_signal_again_later_forces_the_exit(tmp_path: Path) -> None:
    service = _service(tmp_path, [SYMBOL])
    gate = asyncio.Event()
    make_trader = service.make_trader

    def stuck_trader(settings: TraderSettings, claim: Claim) -> Trader:
        trader = make_trader(settings, claim)
        original = trader.quiesce

        async def stuck_quiesce() -> None:  # shutdown that does not finish by itself
            await original()
            await gate.wait()

        trader.quiesce = stuck_quiesce  # type: ignore[method-assign]
        return trader

    service.make_trader = stuck_trader
    service.shutdown_grace = 30
    task = asyncio.create_task(serve(service))
    await _ready_trader(service)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(REPEAT_WINDOW + 0.1)
    os.kill(os.getpid(), signal.SIGTERM)
    result = await asyncio.wait_for(task, 5)
    assert result.fatal == "stopped by a second signal before shutdown finished"


async def test_a_transient_error_while_a_symbol_starts_is_retried_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "START_RETRY_FIRST", 0.05)
    service = _service(tmp_path, [SYMBOL])
    exchange = service.exchange
    failures = {"left": 2}
    fetch_open_orders = exchange.fetch_open_orders

    async def flaky(symbol: str) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise Disconnected("connection reset by peer")
        return await fetch_open_orders(symbol)

    exchange.fetch_open_orders = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = await _trade_until_orders(service, stop)  # ready, trading: the retries worked
    assert failures["left"] == 0
    assert service.result.failed == {}
    stop.set()
    result = await asyncio.wait_for(task, 5)
    assert result.ok  # type: ignore[attr-defined]


async def test_a_start_refused_by_buffered_writes_goes_again_once_they_are_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database answers again after an outage, but writes of it wait in the buffer: a
    symbol's start (reading its grid) is refused until they are stored. It goes again as
    soon as the replay has stored them, not after its backoff (here 30 s)."""
    monkeypatch.setattr(app, "START_RETRY_FIRST", 30.0)
    journal = tmp_path / "journal.jsonl"
    down = {"orders": True}

    def buffered(inner: SqlRepository) -> BufferedRepository:
        save_orders = inner.save_orders

        async def refused(orders: Any) -> None:
            if down["orders"]:
                raise StorageUnavailable("save_orders: the database is unavailable")
            await save_orders(orders)

        inner.save_orders = refused  # type: ignore[method-assign]
        return BufferedRepository(inner, journal, retry_interval=3600)

    earlier = buffered(make_repository(tmp_path))  # a previous run, cut off its database
    await earlier.start()
    await earlier.save_orders([order("B-9.0")])
    await earlier.close()  # its write stays in the journal

    repository = buffered(make_repository(tmp_path))
    service = assemble(
        [SETTINGS],
        exchange=make_exchange(tmp_path),
        repository=repository,
        locker=NopLock(),
        metrics=Metrics(),
        shutdown_grace=2.0,
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(service.run(stop))
        # its start refused: the write waits
        await until(lambda: any(e["event"] == "symbol_start_retry" for e in logs))
    trader = _trader(service)
    assert trader is not None and not trader.ready.is_set() and repository.pending == 1
    down["orders"] = False  # the database takes the write: the replay stores it
    assert await repository.flush() == 1
    await asyncio.wait_for(trader.ready.wait(), 5)
    stop.set()
    assert (await asyncio.wait_for(task, 5)).ok


async def test_a_permanent_error_while_a_symbol_starts_fails_it_at_once(tmp_path: Path) -> None:
    service = _service(tmp_path, [SYMBOL, "NOPE/USDT"])
    stop = asyncio.Event()
    task = await _trade_until_orders(service, stop)
    assert "NOPE/USDT" in service.result.failed  # market not found: no retry
    stop.set()
    await asyncio.wait_for(task, 5)


def _slow_service(tmp_path: Path, *, cancel_timeout: float) -> Service:
    """Two symbols of 20 open buys each on an exchange that takes 150 ms per call."""
    btc = "BTC/USDT"
    btc_rules = replace(RULES, symbol=btc, base="BTC")
    exchange = SimulatedExchange(
        {SYMBOL: SimMarket(RULES, Decimal(2000)), btc: SimMarket(btc_rules, Decimal(2000))},
        {"USDT": Decimal(100000)},
        Decimal("0.001"),
        tmp_path / "sim.db",
        latency=0.15,
    )
    settings = [
        replace(SETTINGS, grid=replace(SETTINGS.grid, symbol=s, buy_window=20))
        for s in (SYMBOL, btc)
    ]
    service = assemble(
        settings,
        exchange=exchange,
        repository=make_repository(tmp_path),
        locker=NopLock(),
        metrics=Metrics(),
        shutdown_grace=2.0,
        cancel_on_exit=True,
        cancel_timeout=cancel_timeout,
    )
    return service


@pytest.mark.timeout(60)
async def test_cancel_on_exit_cancels_forty_orders_on_a_slow_exchange(tmp_path: Path) -> None:
    """40 cancels of 150 ms each, one after another, would overrun the shutdown grace."""
    service = _slow_service(tmp_path, cancel_timeout=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    traders = [await _ready_trader(service, s) for s in (SYMBOL, "BTC/USDT")]
    for symbol in (SYMBOL, "BTC/USDT"):
        service.exchange.set_price(symbol, Decimal(2001))  # type: ignore[attr-defined]
    await until(lambda: sum(t.open_order_count for t in traders) == 40, timeout=20)
    stop.set()
    result = await asyncio.wait_for(task, 20)
    assert result.fatal is None and result.ok
    engine = service.exchange.engine  # type: ignore[attr-defined]
    assert engine.open_orders(SYMBOL) == [] and engine.open_orders("BTC/USDT") == []
    left = service.metrics.registry.get_sample_value(
        "quantmesh_open_orders_left", {"symbol": SYMBOL}
    )
    assert left == 0


@pytest.mark.timeout(60)
async def test_orders_left_open_at_exit_are_counted_and_fail_the_run(tmp_path: Path) -> None:
    service = _slow_service(tmp_path, cancel_timeout=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    traders = [await _ready_trader(service, s) for s in (SYMBOL, "BTC/USDT")]
    for symbol in (SYMBOL, "BTC/USDT"):
        service.exchange.set_price(symbol, Decimal(2001))  # type: ignore[attr-defined]
    await until(lambda: sum(t.open_order_count for t in traders) == 40, timeout=20)
    stop.set()
    result = await asyncio.wait_for(task, 20)
    engine = service.exchange.engine  # type: ignore[attr-defined]
    still_open = len(engine.open_orders(SYMBOL)) + len(engine.open_orders("BTC/USDT"))
    assert still_open > 0
    assert result.fatal is not None and "orders are still open" in result.fatal
    counted = sum(
        service.metrics.registry.get_sample_value("quantmesh_open_orders_left", {"symbol": s}) or 0
        for s in (SYMBOL, "BTC/USDT")
    )
    assert counted == still_open
    # what was cancelled before the budget ran out is recorded as cancelled
    repository = make_repository(tmp_path)
    await repository.start()
    try:
        recorded_open = len(await repository.get_open_orders(SYMBOL)) + len(
            await repository.get_open_orders("BTC/USDT")
        )
    finally:
        await repository.close()
    assert recorded_open == still_open
