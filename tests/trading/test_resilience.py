"""The trader when things around it go wrong: a stream that misses events, a stale price,
revoked keys, a database that cannot answer a read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from quantmesh.domain import Fill, Order, OrderRequest, OrderUpdate
from quantmesh.errors import (
    AuthenticationFailed,
    Disconnected,
    OrderNotFound,
    StorageUnavailable,
)
from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.grid.ids import client_order_id, grid_tag
from quantmesh.lock.base import Lease
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.base import TradeFilter
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.trader import Trader

from .support import (
    RULES,
    SETTINGS,
    SYMBOL,
    LossyExchange,
    MutableStreamExchange,
    running_trader,
    settle,
    stored,
    until,
)

FAST_RECONCILE = replace(SETTINGS, reconcile_interval=0.1)


def holding(run: Any) -> Decimal:
    return run.trader.inventory  # type: ignore[no-any-return]


class ReconcileGate(NopLock):
    """Level locks always granted; the reconcile lock only while ``open``."""

    def __init__(self) -> None:
        super().__init__()
        self.open = False
        self.refused = 0

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        if key.endswith(":reconcile") and not self.open:
            self.refused += 1
            return None
        return await super().try_lock(key, ttl)


async def test_a_fill_the_order_stream_missed_is_found_by_the_periodic_reconcile(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    lagging = MutableStreamExchange(exchange)
    async with running_trader(lagging, repository, settings=FAST_RECONCILE) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        lagging.silent = True
        exchange.set_price(SYMBOL, Decimal(1999))  # fills the buy at 2000, unseen
        await until(lambda: holding(run) == Decimal("0.0150"), timeout=5)
        trades = await stored(lambda: repository.get_trades(TradeFilter(symbol=SYMBOL)), bool)
        assert [(t.side, t.price) for t in trades] == [("buy", Decimal(2000))]
        exchange.set_price(SYMBOL, Decimal("1999.5"))  # the next tick places the sell
        await until(lambda: any(o.side == "sell" for o in exchange.engine.open_orders(SYMBOL)))


async def test_the_reconcile_waits_for_its_lock(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    lagging = MutableStreamExchange(exchange)
    gate = ReconcileGate()
    async with running_trader(lagging, repository, locker=gate, settings=FAST_RECONCILE) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        lagging.silent = True
        exchange.set_price(SYMBOL, Decimal(1999))
        await until(lambda: gate.refused >= 3)
        assert holding(run) == 0  # not reconciled without the lock
        gate.open = True
        await until(lambda: holding(run) == Decimal("0.0150"))


class Stale(LossyExchange):
    """An exchange that says whether its price can be trusted (the ccxt adapter does)."""

    def __init__(self, inner: SimulatedExchange) -> None:
        super().__init__(inner, failures=0)
        self.fresh = False

    @property
    def price_stale_after(self) -> float:
        return 30.0

    def price_age(self, symbol: str) -> float | None:
        return 1.0 if self.fresh else 60.0

    def price_fresh(self, symbol: str) -> bool:
        return self.fresh

    def price_health(self) -> Stale:
        return self


async def test_a_symbol_with_a_stale_price_places_nothing_until_it_is_fresh(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    stale = Stale(exchange)
    async with running_trader(stale, repository) as run:
        for _ in range(5):
            exchange.set_price(SYMBOL, Decimal(2001))
            await settle()
        assert exchange.engine.all_orders() == []
        assert run.trader.price_age == 60.0
        stale.fresh = True
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.open_ids()) == 3)


class Revoked(LossyExchange):
    async def create_order(self, request: OrderRequest) -> Order:
        self.create_calls += 1
        raise AuthenticationFailed("binance refused the API key (-2015 Invalid API-key)")


async def test_keys_refused_while_trading_stop_the_trader_after_one_attempt(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    revoked = Revoked(exchange, failures=0)
    trader = Trader(
        SETTINGS,
        exchange=revoked,
        repository=repository,
        locker=NopLock(),
        lock_keys=LockKeys("simulated"),
        metrics=Metrics(),
    )
    task = asyncio.create_task(trader.run())
    await until(trader.ready.is_set)
    exchange.set_price(SYMBOL, Decimal(2001))
    await until(task.done)
    with pytest.raises(ExceptionGroup) as raised:
        task.result()
    assert raised.group_contains(AuthenticationFailed)
    assert revoked.create_calls == 1


class Unreadable:
    """A repository whose reads fail (writes waiting in the buffer) while ``down``."""

    def __init__(self, inner: SqlRepository) -> None:
        self._inner = inner
        self.down = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def known_trade_ids(self, symbol: str, trade_ids: list[str]) -> set[str]:
        if self.down:
            self.refused += 1
            raise StorageUnavailable("the database is unavailable; 3 writes wait for replay")
        return await self._inner.known_trade_ids(symbol, trade_ids)


async def test_a_fill_settled_at_start_waits_while_the_database_cannot_say_if_it_is_new(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    async with running_trader(exchange, repository) as first:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(first.tracked_ids()) == 3)
    exchange.set_price(SYMBOL, Decimal(1999))  # fills the buy at 2000 while stopped
    unreadable = Unreadable(repository)
    unreadable.down = True
    async with running_trader(exchange, unreadable) as second:  # type: ignore[arg-type]
        assert unreadable.refused >= 1  # settling the filled order asked, and was refused
        assert not second.task.done()  # the symbol runs
        assert holding(second) == 0
        unreadable.down = False
        for _ in range(50):  # ticks drive the lookup of the order left unknown
            exchange.set_price(SYMBOL, Decimal(1999))
            await settle()
            if holding(second) > 0:
                break
        assert holding(second) == Decimal("0.0150")
    trades = await repository.get_trades(TradeFilter(symbol=SYMBOL))
    assert [(t.side, t.price) for t in trades] == [("buy", Decimal(2000))]


class LateAccept(LossyExchange):
    """The first create times out; the exchange shows the order ``delay`` seconds later,
    or never (``delay`` None)."""

    def __init__(self, inner: SimulatedExchange, delay: float | None) -> None:
        super().__init__(inner, failures=0)
        self.delay = delay
        self.calls: list[str] = []
        self._late: set[asyncio.Task[Order]] = set()

    async def create_order(self, request: OrderRequest) -> Order:
        self.calls.append(request.client_order_id)
        if len(self.calls) > 1:
            return await self._inner.create_order(request)
        if self.delay is not None:
            task = asyncio.create_task(self._accept_later(request, self.delay))
            self._late.add(task)
        raise Disconnected("read timed out")

    async def _accept_later(self, request: OrderRequest, delay: float) -> Order:
        await asyncio.sleep(delay)
        return await self._inner.create_order(request)


async def _tick_until(exchange: SimulatedExchange, done: Any, seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not done() and asyncio.get_running_loop().time() < deadline:
        exchange.set_price(SYMBOL, Decimal(2001))
        await asyncio.sleep(0.02)


async def test_a_timed_out_create_the_exchange_shows_late_is_adopted_not_sent_again(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    late = LateAccept(exchange, delay=0.4)
    settings = replace(
        SETTINGS,
        grid=replace(SETTINGS.grid, buy_window=1),
        lookup_interval=0.05,
        unknown_grace=5.0,
    )
    async with running_trader(late, repository, settings=settings) as run:
        first = client_order_id(run.trader.book.tag, 0, "buy", 0)  # type: ignore[union-attr]
        await _tick_until(
            exchange, lambda: first in run.open_ids() and first in run.tracked_ids(), 3
        )
        await _tick_until(exchange, lambda: False, 0.3)  # more ticks, more lookups
        assert late.calls == [first]  # sent once; "not found" during the grace freed nothing
        assert first in run.tracked_ids()
    assert [o.client_order_id for o in exchange.engine.all_orders()] == [first]


async def test_a_timed_out_create_never_seen_frees_its_level_after_the_grace(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    lost = LateAccept(exchange, delay=None)
    settings = replace(
        SETTINGS,
        grid=replace(SETTINGS.grid, buy_window=1),
        lookup_interval=0.05,
        unknown_grace=0.3,
    )
    async with running_trader(lost, repository, settings=settings) as run:
        first = client_order_id(run.trader.book.tag, 0, "buy", 0)  # type: ignore[union-attr]
        await _tick_until(exchange, lambda: len(lost.calls) >= 1, 2)
        await _tick_until(exchange, lambda: False, 0.2)
        assert lost.calls == [first]  # within the grace: blocked
        await _tick_until(exchange, lambda: len(lost.calls) >= 2, 3)
        assert lost.calls == [first, first]  # then placed again, with the same id
        await until(lambda: first in run.open_ids())


class LaggingTrades(MutableStreamExchange):
    """The order endpoint says FILLED before the trades endpoint lists the trade (``lag``
    lookups in a row)."""

    def __init__(self, inner: SimulatedExchange, lag: int) -> None:
        super().__init__(inner)
        self.lag = lag

    async def fetch_order_fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        if self.lag:
            self.lag -= 1
            return []
        return await self._inner.fetch_order_fills(symbol, client_order_id)


async def test_an_order_filled_before_its_trades_are_listed_keeps_its_level_until_they_are(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    lagging = LaggingTrades(exchange, lag=0)
    settings = replace(SETTINGS, reconcile_interval=0.1, lookup_interval=0.05)
    async with running_trader(lagging, repository, settings=settings) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.tracked_ids()) == 3)
        buy = client_order_id(run.trader.book.tag, 0, "buy", 0)  # type: ignore[union-attr]
        lagging.silent = True  # the stream misses the fill: the reconcile finds it
        lagging.lag = 3  # and the first lookups list no trades
        exchange.set_price(SYMBOL, Decimal(1999))  # fills the buy at 2000
        await _tick_until(exchange, lambda: holding(run) > 0, 5)
        assert holding(run) == Decimal("0.0150")
        assert [o.client_order_id for o in exchange.engine.all_orders()].count(buy) == 1
    trades = await repository.get_trades(TradeFilter(symbol=SYMBOL))
    assert [(t.side, t.amount) for t in trades] == [("buy", Decimal("0.0150"))]


class Scripted:
    """An exchange whose orders, fills and updates the test sets."""

    name = "simulated"

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.fills: dict[str, list[Fill]] = {}
        self.updates: asyncio.Queue[OrderUpdate] = asyncio.Queue()

    async def market(self, symbol: str) -> Any:
        return RULES

    def price_health(self) -> None:
        return None  # its prices never go stale

    async def _stream(self, queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        while True:
            yield await queue.get()

    def watch_ticks(self, symbol: str) -> AsyncIterator[Any]:
        return self._stream(asyncio.Queue())

    def watch_orders(self, symbol: str) -> AsyncIterator[OrderUpdate]:
        self.updates = asyncio.Queue()
        return self._stream(self.updates)

    async def fetch_order(self, symbol: str, cid: str) -> Order:
        if cid not in self.orders:
            raise OrderNotFound(cid)
        return self.orders[cid]

    async def fetch_order_fills(self, symbol: str, cid: str) -> list[Fill]:
        return list(self.fills.get(cid, []))

    async def fetch_orders_since(self, symbol: str, since: float) -> list[Order]:
        return list(self.orders.values())

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open]


def _buy_fill(trade_id: str, cid: str, amount: str) -> Fill:
    return Fill(
        trade_id, SYMBOL, "buy", Decimal(2000), Decimal(amount), Decimal(0), "USDT", cid, "X1", 1.0
    )


async def test_a_fill_stored_before_a_restart_is_not_applied_again_when_repeated(
    repository: SqlRepository,
) -> None:
    exchange = Scripted()
    tag = grid_tag(SYMBOL, Decimal(2000), Decimal(10), "arithmetic")
    cid = client_order_id(tag, 0, "buy", 0)
    partly = Order(
        SYMBOL, "buy", Decimal(2000), Decimal("0.0150"), cid, "X1", "open", Decimal("0.0050"), 1, 1
    )
    t1 = _buy_fill("T1", cid, "0.0050")
    exchange.orders[cid], exchange.fills[cid] = partly, [t1]
    async with running_trader(exchange, repository) as first:  # adopts X1, stores T1
        assert holding(first) == Decimal("0.0050")
    async with running_trader(exchange, repository) as second:  # T1 known: not again
        assert holding(second) == Decimal("0.0050")
        done = replace(partly, status="filled", filled=Decimal("0.0150"), updated_at=2)
        t2 = _buy_fill("T2", cid, "0.0100")
        exchange.orders[cid], exchange.fills[cid] = done, [t1, t2]
        exchange.updates.put_nowait(OrderUpdate(done, (t1, t2)))  # repeats T1
        await until(lambda: holding(second) != Decimal("0.0050"))
        assert holding(second) == Decimal("0.0150")
    trades = await repository.get_trades(TradeFilter(symbol=SYMBOL))
    assert sorted(t.trade_id for t in trades) == ["T1", "T2"]


class LateSecondCreate(LossyExchange):
    """The second create of ``watch`` times out, and the exchange shows it ``delay`` s later."""

    def __init__(self, inner: SimulatedExchange, delay: float) -> None:
        super().__init__(inner, failures=0)
        self.delay = delay
        self.watch = ""
        self.calls = 0
        self._late: set[asyncio.Task[None]] = set()

    async def create_order(self, request: OrderRequest) -> Order:
        if request.client_order_id == self.watch:
            self.calls += 1
            if self.calls == 2:
                self._late.add(asyncio.create_task(self._land(request)))
                raise Disconnected("read timed out")
        return await self._inner.create_order(request)

    async def _land(self, request: OrderRequest) -> None:
        await asyncio.sleep(self.delay)
        await self._inner.create_order(request)


async def test_the_earlier_order_of_a_reused_id_does_not_settle_a_timed_out_create(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    late = LateSecondCreate(exchange, delay=0.5)
    settings = replace(
        SETTINGS,
        grid=replace(SETTINGS.grid, buy_window=1),
        lookup_interval=0.05,
        unknown_grace=5.0,
    )
    async with running_trader(late, repository, settings=settings) as run:
        cid = client_order_id(run.trader.book.tag, 0, "buy", 0)  # type: ignore[union-attr]
        late.watch = cid
        exchange.set_price(SYMBOL, Decimal(2001))  # placed
        await until(lambda: cid in run.open_ids())
        exchange.set_price(SYMBOL, Decimal(2021))  # cancelled unfilled, outside the window
        await until(lambda: cid not in run.open_ids())
        # back in the window: placed again with the same id, and that create times out;
        # looking the id up finds the earlier, cancelled order, which settles nothing
        await _tick_until(exchange, lambda: late.calls >= 2, 3)
        await _tick_until(exchange, lambda: False, 0.3)
        assert late.calls == 2
        await until(lambda: cid in run.open_ids() and cid in run.tracked_ids())
        await _tick_until(exchange, lambda: False, 0.2)
        assert late.calls == 2  # the late order was adopted, not sent a third time


async def test_an_open_order_the_exchange_forgot_is_settled_after_some_rounds(
    repository: SqlRepository,
) -> None:
    exchange = Scripted()
    tag = grid_tag(SYMBOL, Decimal(2000), Decimal(10), "arithmetic")
    cid = client_order_id(tag, 0, "buy", 0)
    exchange.orders[cid] = Order(
        SYMBOL, "buy", Decimal(2000), Decimal("0.0150"), cid, "X1", "open", Decimal(0), 1, 1
    )
    settings = replace(SETTINGS, reconcile_interval=0.05)
    async with running_trader(exchange, repository, settings=settings) as run:
        assert cid in run.tracked_ids()
        del exchange.orders[cid]  # purged: neither listed nor found
        await until(lambda: cid not in run.tracked_ids())
    stored = await repository.get_order(cid)
    assert stored is not None and stored.status == "canceled"


async def test_nothing_new_is_placed_while_a_component_holds_placing(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    block: dict[str, str | None] = {"reason": "3 writes held in memory only"}
    trader = Trader(
        SETTINGS,
        exchange=exchange,
        repository=repository,
        locker=NopLock(),
        lock_keys=LockKeys("simulated"),
        metrics=Metrics(),
        placing_block=lambda: block["reason"],
    )
    task = asyncio.create_task(trader.run())
    try:
        await until(trader.ready.is_set)
        with capture_logs() as logs:
            for _ in range(5):
                exchange.set_price(SYMBOL, Decimal(2001))
                await settle()
            assert exchange.engine.all_orders() == []
            block["reason"] = None
            exchange.set_price(SYMBOL, Decimal(2001))
            await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
        events = [e["event"] for e in logs if e["event"].startswith("placing_")]
        assert events == ["placing_blocked", "placing_unblocked"]  # once each, not per tick
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
