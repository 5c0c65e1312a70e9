"""The trader when things around it go wrong: a stream that misses events, a stale price,
revoked keys, a database that cannot answer a read."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from quantmesh.domain import Order, OrderRequest
from quantmesh.errors import AuthenticationFailed, Disconnected, StorageUnavailable
from quantmesh.exchange.simulated import SimulatedExchange
from quantmesh.lock.base import Lease
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.base import TradeFilter
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.ids import client_order_id
from quantmesh.trading.lockkeys import LockKeys
from quantmesh.trading.trader import Trader

from .support import (
    SETTINGS,
    SYMBOL,
    LossyExchange,
    MutableStreamExchange,
    running_trader,
    settle,
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
        trades = await repository.get_trades(TradeFilter(symbol=SYMBOL))
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
        exchange=revoked,  # type: ignore[arg-type]
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
        assert unreadable.refused == 1  # settling the filled order asked, and was refused
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
    settings = replace(SETTINGS, buy_window=1, lookup_interval=0.05, unknown_grace=5.0)
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
    settings = replace(SETTINGS, buy_window=1, lookup_interval=0.05, unknown_grace=0.3)
    async with running_trader(lost, repository, settings=settings) as run:
        first = client_order_id(run.trader.book.tag, 0, "buy", 0)  # type: ignore[union-attr]
        await _tick_until(exchange, lambda: len(lost.calls) >= 1, 2)
        await _tick_until(exchange, lambda: False, 0.2)
        assert lost.calls == [first]  # within the grace: blocked
        await _tick_until(exchange, lambda: len(lost.calls) >= 2, 3)
        assert lost.calls == [first, first]  # then placed again, with the same id
        await until(lambda: first in run.open_ids())
