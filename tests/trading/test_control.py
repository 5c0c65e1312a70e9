"""A trader follows what a person asked of its symbol: nothing placed while that is unknown
or paused, sells only with buys stopped, every order cancelled with cancel-all, the grid
back on resume - on the simulated exchange."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from decimal import Decimal

from quantmesh.control.desired import ACTIVE, Desired
from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.trader import Trader, TraderSettings

from .support import SETTINGS, SYMBOL, settle, until


class Asked:
    """What a person asked of the symbol, changed by the test."""

    def __init__(self, desired: Desired | None) -> None:
        self.desired = desired

    def __call__(self) -> Desired | None:
        return self.desired


@asynccontextmanager
async def trading(
    exchange: SimulatedExchange,
    repository: SqlRepository,
    asked: Asked,
    settings: TraderSettings = SETTINGS,
) -> AsyncIterator[Trader]:
    trader = Trader(
        settings,
        exchange=exchange,
        repository=repository,
        locker=NopLock(),
        lock_keys=LockKeys("simulated"),
        metrics=Metrics(),
        control=asked,
    )
    task = asyncio.create_task(trader.run())
    try:
        await until(trader.ready.is_set)
        yield trader
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def open_sides(exchange: SimulatedExchange) -> list[tuple[str, str]]:
    return sorted((o.side, str(o.price)) for o in exchange.engine.open_orders(SYMBOL))


def open_sells(exchange: SimulatedExchange) -> list[tuple[str, str]]:
    return [order for order in open_sides(exchange) if order[0] == "sell"]


async def tick(exchange: SimulatedExchange, price: str) -> None:
    exchange.set_price(SYMBOL, Decimal(price))
    await settle()


async def ticking_until(
    exchange: SimulatedExchange, price: str, condition: Callable[[], bool]
) -> None:
    """Price ticks at ``price`` (the trader acts on ticks) until ``condition`` holds."""
    for _ in range(100):
        if condition():
            return
        await tick(exchange, price)
    raise AssertionError("condition not met in 100 ticks")


async def test_nothing_is_placed_while_the_desired_state_is_unknown_or_paused(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    asked = Asked(None)
    async with trading(exchange, repository, asked):
        for _ in range(3):
            await tick(exchange, "2001")
        assert exchange.engine.all_orders() == []
        asked.desired = Desired("paused", reason="maintenance")
        for _ in range(3):
            await tick(exchange, "2001")
        assert exchange.engine.all_orders() == []
        asked.desired = ACTIVE
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)


async def test_stop_buys_cancels_the_buys_and_keeps_selling_then_resume_buys_again(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    asked = Asked(ACTIVE)
    async with trading(exchange, repository, asked) as trader:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
        # the buys at 2000 and 1990 fill, their sells follow
        await ticking_until(exchange, "1989", lambda: ("sell", "2000.00") in open_sides(exchange))
        sells = open_sells(exchange)
        asked.desired = Desired("stop_buys", reason="falling")
        await ticking_until(exchange, "1989", lambda: open_sides(exchange) == sells)
        for price in ("1985", "1989"):  # the grid would buy below these
            await tick(exchange, price)
        assert open_sides(exchange) == sells
        assert trader.control == asked.desired
        asked.desired = ACTIVE
        await ticking_until(
            exchange, "1989", lambda: any(side == "buy" for side, _ in open_sides(exchange))
        )


async def test_cancel_all_cancels_every_order_and_places_nothing_after(
    exchange: SimulatedExchange, repository: SqlRepository
) -> None:
    asked = Asked(ACTIVE)
    async with trading(exchange, repository, asked):
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(exchange.engine.open_orders(SYMBOL)) == 3)
        await ticking_until(exchange, "1989", lambda: ("sell", "2000.00") in open_sides(exchange))
        assert any(side == "buy" for side, _ in open_sides(exchange))
        asked.desired = Desired("paused", cancel_orders=True, reason="exit")
        await ticking_until(exchange, "1989", lambda: open_sides(exchange) == [])
        placed = len(exchange.engine.all_orders())
        for price in ("1985", "2020", "1989"):
            await tick(exchange, price)
        assert open_sides(exchange) == [] and len(exchange.engine.all_orders()) == placed
    stored = await repository.get_open_orders(SYMBOL)
    assert stored == []
