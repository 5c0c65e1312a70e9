"""Long random price paths with restarts: the books balance to the last unit.

A seeded walk drives the simulated exchange through many fills, cancels and two restarts
of the trader: one while prices keep moving, one after the trader was killed mid-step. Afterwards the database, the trader's book
and the exchange's own account must agree exactly.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from quantmesh.exchange.sim.simulated import SimulatedExchange
from quantmesh.storage.base import TradeFilter
from quantmesh.storage.repository import SqlRepository

from .support import (
    SYMBOL,
    SlowAnswers,
    running_trader,
    settle,
)

START_QUOTE = Decimal(100000)  # the balance make_exchange gives


def _walk(seed: int, steps: int) -> list[Decimal]:
    rng = random.Random(seed)
    price, path = 2000.0, []
    for _ in range(steps):
        price = min(max(price + rng.gauss(0, 6), 1900.0), 2100.0)
        path.append(Decimal(f"{price:.2f}"))
    return path


async def _drive(exchange: SimulatedExchange, prices: list[Decimal]) -> None:
    for price in prices:
        exchange.set_price(SYMBOL, price)
        await settle()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_database_book_and_exchange_agree_after_a_long_walk_with_restarts(
    exchange: SimulatedExchange, repository: SqlRepository, seed: int
) -> None:
    path = _walk(seed, 150)
    async with running_trader(exchange, repository):
        await _drive(exchange, path[:60])
    await _drive(exchange, path[60:75])  # prices move while the trader is down
    slow = SlowAnswers(exchange, delay=0.05)
    async with running_trader(slow, repository, crash=True):
        await _drive(exchange, path[75:100])
        # Killed while an order's answer is on its way: the exchange has the order, the
        # database has not heard of it.
        placed, crashed_at = slow.create_calls, len(path)
        for n in range(100, len(path)):
            exchange.set_price(SYMBOL, path[n])
            await settle()
            if slow.create_calls > placed:
                crashed_at = n + 1
                break
    assert crashed_at < 120, "no order placed to crash on"
    async with running_trader(exchange, repository):
        await _drive(exchange, path[crashed_at:120])
    async with running_trader(exchange, repository) as run:
        await _drive(exchange, path[120:])
        book = run.trader.book
        assert book is not None
        levels = list(book.state.levels.values())
        book_open = {o.client_order_id for o in book.open_orders()}

    engine = exchange.engine
    trips = await repository.get_round_trips(SYMBOL)
    assert trips, "no round trip: the walk did not exercise the grid"

    # Every fill on the exchange is stored exactly once.
    stored = await repository.get_trades(TradeFilter(symbol=SYMBOL, limit=100_000))
    assert sorted(f.trade_id for f in stored) == sorted(f.trade_id for f in engine.fills())

    # Open orders: the exchange, the database and the book say the same.
    on_exchange = {o.client_order_id for o in engine.open_orders(SYMBOL)}
    in_db = {o.client_order_id for o in await repository.get_open_orders(SYMBOL)}
    assert on_exchange == in_db == book_open

    # No two open orders at one side and price.
    open_keys = [(o.side, o.price) for o in engine.open_orders(SYMBOL)]
    assert len(open_keys) == len(set(open_keys))

    # Inventory: what the grid holds is exactly the base currency the account holds.
    balances = engine.balances()
    assert sum((lvl.holding for lvl in levels), Decimal(0)) == balances["ETH"].total

    # Money: quote spent = cost of what is held - realized PnL, to the last unit.
    spent = START_QUOTE - balances["USDT"].total
    held_cost = sum((lvl.cost for lvl in levels), Decimal(0))
    assert spent == held_cost - sum((t.pnl for t in trips), Decimal(0))

    # The database holds the same grid as the book.
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None
    assert sorted(grid.levels.values(), key=lambda lvl: lvl.index) == sorted(
        levels, key=lambda lvl: lvl.index
    )
