"""The reconciler on its own: a book, the simulated exchange and the SQLite repository, with
what it applies recorded instead of handed to a trader."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field, replace
from decimal import Decimal

import pytest

from quantmesh.domain import Order, OrderRequest, OrderUpdate
from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.grid.ids import client_order_id, grid_tag
from quantmesh.grid.state import GridState
from quantmesh.lock.base import DistributedLock
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.book import OrderBook
from quantmesh.trading.reconcile import Reconciler
from quantmesh.trading.sender import OrderSender

from .support import RULES, SETTINGS, SYMBOL, RefusingLock, until

ANCHOR = Decimal(2000)
TAG = grid_tag(SYMBOL, ANCHOR, SETTINGS.grid.interval, SETTINGS.grid.spacing)
BUY_1, BUY_2 = client_order_id(TAG, -1, "buy", 0), client_order_id(TAG, -2, "buy", 0)
AMOUNT = Decimal("0.015")


@dataclass
class Applied:
    """What the reconciler handed back to be recorded (the trader's record and absorb)."""

    updates: list[OrderUpdate] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)

    async def record(self, update: OrderUpdate) -> None:
        self.updates.append(update)

    async def absorb(self, order: Order) -> None:
        self.orders.append(order)

    def order_ids(self) -> list[str]:
        return [order.client_order_id for order in self.orders]


def make_book() -> OrderBook:
    return OrderBook(SETTINGS.grid.anchored_at(ANCHOR), RULES, GridState(SYMBOL, ANCHOR), TAG)


def make_reconciler(
    book: OrderBook,
    exchange: SimulatedExchange,
    repository: SqlRepository,
    applied: Applied,
    locker: DistributedLock | None = None,
    placing: bool = True,
) -> Reconciler:
    metrics = Metrics()
    keys = LockKeys("simulated")
    sender = OrderSender(
        SYMBOL,
        exchange=exchange,
        locker=NopLock(),
        lock_keys=keys,
        metrics=metrics,
        place_ttl=5.0,
        cancel_ttl=3.0,
        reject_cooldown=30.0,
        unknown_grace=0.0,
    )
    return Reconciler(
        book,
        exchange=exchange,
        repository=repository,
        sender=sender,
        record=applied.record,
        absorb=applied.absorb,
        mutex=asyncio.Lock(),
        locker=NopLock() if locker is None else locker,
        lock_keys=keys,
        metrics=metrics,
        interval=0.01,
        lock_ttl=1.0,
        placing=lambda: placing,
    )


async def place(exchange: SimulatedExchange, cid: str, price: str) -> Order:
    """A buy below the market (2000), so it stays open."""
    return await exchange.create_order(OrderRequest(SYMBOL, "buy", Decimal(price), AMOUNT, cid))


def track(book: OrderBook, order: Order) -> None:
    """The book follows ``order`` as open, as after its placement was recorded."""
    effect = book.effect(OrderUpdate(order), 0.0)
    assert effect is not None
    book.commit(effect)


async def test_catch_up_adopts_our_open_orders_oldest_first_and_leaves_foreign_ones(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    await place(exchange, BUY_1, "1990")
    await place(exchange, "someone-elses-order", "1985")
    await place(exchange, BUY_2, "1980")
    applied = Applied()
    await make_reconciler(make_book(), exchange, repository, applied).catch_up()
    assert applied.order_ids() == [BUY_1, BUY_2]
    assert all(order.is_open for order in applied.orders) and applied.updates == []


async def test_catch_up_settles_a_recorded_open_order_the_exchange_forgot_as_cancelled(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    recorded = await place(exchange, BUY_1, "1990")
    await repository.save_orders([recorded])
    forgotten = replace(recorded, client_order_id=BUY_2)  # recorded, never on the exchange
    await repository.save_orders([forgotten])
    applied = Applied()
    await make_reconciler(make_book(), exchange, repository, applied).catch_up()
    assert applied.order_ids() == [BUY_1, BUY_2]
    assert [order.status for order in applied.orders] == ["open", "canceled"]


async def test_an_order_the_exchange_lost_is_settled_as_cancelled_after_three_rounds(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    lost = Order(SYMBOL, "buy", Decimal(1990), AMOUNT, BUY_1, "x-1", "open", Decimal(0), 1.0, 1.0)
    await repository.save_orders([lost])  # the exchange never shows it
    book = make_book()
    track(book, lost)
    applied = Applied()
    reconciler = make_reconciler(book, exchange, repository, applied)
    for _ in range(2):
        await reconciler.resync()
        assert applied.orders == []
    await reconciler.resync()
    assert applied.order_ids() == [BUY_1] and applied.orders[0].status == "canceled"


async def test_a_round_is_skipped_while_the_reconcile_lock_is_held_elsewhere(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    await place(exchange, BUY_1, "1990")
    applied = Applied()
    refusing = RefusingLock()
    await make_reconciler(make_book(), exchange, repository, applied, refusing).resync()
    assert refusing.calls == 1 and applied.orders == []


async def test_rounds_run_every_interval_only_while_the_trader_places(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    await place(exchange, BUY_1, "1990")
    idle, active = Applied(), Applied()
    stopped = make_reconciler(make_book(), exchange, repository, idle, placing=False)
    placing = make_reconciler(make_book(), exchange, repository, active)
    tasks = [asyncio.create_task(stopped.run()), asyncio.create_task(placing.run())]
    try:
        await until(lambda: BUY_1 in active.order_ids())
        await asyncio.sleep(0.05)  # several intervals
    finally:
        for task in tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
    assert idle.orders == []


async def test_an_order_of_unknown_outcome_found_on_the_exchange_is_absorbed(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    placed = await place(exchange, BUY_1, "1990")
    book = make_book()
    book.track_unknown(OrderRequest(SYMBOL, "buy", placed.price, placed.amount, BUY_1))
    book.track_unknown(OrderRequest(SYMBOL, "buy", placed.price, placed.amount, BUY_2))
    applied = Applied()
    await make_reconciler(book, exchange, repository, applied).resolve_unknown()
    assert applied.order_ids() == [BUY_1]
    assert book.unknown_ids() == [BUY_1]  # absorbing it is the trader's; BUY_2 was not placed


async def test_a_cancellation_swallowed_in_a_round_still_ends_the_rounds(
    exchange: SimulatedExchange, repository: SqlRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's ``wait_for`` on Python 3.11 can return its answer and drop the
    cancellation that arrived with it; the trader's task group cancels its tasks only
    once, so the rounds must end on the request still pending, not run on for ever."""
    reconciler = make_reconciler(make_book(), exchange, repository, Applied())
    in_round = asyncio.Event()

    async def swallowing() -> None:
        in_round.set()
        with suppress(asyncio.CancelledError):
            await asyncio.sleep(10)  # the cancellation arrives here and is dropped

    monkeypatch.setattr(reconciler, "resync", swallowing)
    task = asyncio.create_task(reconciler.run())
    await asyncio.wait_for(in_round.wait(), 5)
    task.cancel()  # once, as a task group does
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done, "the rounds ran on after their cancellation"
    assert task.cancelled()
