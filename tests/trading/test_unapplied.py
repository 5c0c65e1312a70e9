"""A level's state follows from the facts: fills a former owner's journal stored without
their level (its level writes refused by the new owner's fence) are applied by the new
owner, which then never buys that level again."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from quantmesh.domain import Order, OrderRequest
from quantmesh.errors import StorageUnavailable
from quantmesh.grid.ids import client_order_id, grid_tag
from quantmesh.grid.state import LevelState
from quantmesh.storage.repository import SqlRepository

from .support import (
    SYMBOL,
    LossyExchange,
    make_exchange,
    make_repository,
    running_trader,
    settle,
    until,
)

TAG = grid_tag(SYMBOL, Decimal(2000), Decimal(10), "arithmetic")
FORMER, NEW = 100, 300  # grid fences of the former owner and of the new one


class ReplayAfterClaim:
    """The former owner's journal replays right after the new owner claimed the grid and
    before it reconciles - the replayer's two writes: the execution under the old fence
    (refused), then its facts alone."""

    def __init__(self, inner: SqlRepository) -> None:
        self._inner = inner
        self.replay: tuple[Order, list[Any], LevelState] | None = None
        self.refused = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def save_levels(self, symbol: str, levels: list[LevelState], fence: int) -> bool:
        claimed = await self._inner.save_levels(symbol, levels, fence)
        if self.replay is not None:
            order, fills, level = self.replay
            self.replay = None
            inner = self._inner
            self.refused = not await inner.record_batch(symbol, [order], fills, [level], [], FORMER)
            await inner.record_batch(symbol, [order], fills, [], [], None)
        return claimed


async def test_a_new_owner_applies_fills_a_former_owner_stored_without_their_level(
    tmp_path: Path,
) -> None:
    exchange = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await exchange.start()
    buy = client_order_id(TAG, -1, "buy", 0)
    async with running_trader(exchange, repository, fence=lambda: FORMER, crash=True) as old:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: buy in old.open_ids())
    # The former owner is cut off from the database (here: gone) while its buy fills; what
    # it would have written waits in its journal.
    exchange.set_price(SYMBOL, Decimal(1986))
    filled = await exchange.fetch_order(SYMBOL, buy)
    assert filled.status == "filled"
    fills = await exchange.fetch_order_fills(SYMBOL, buy)
    level = LevelState(-1, filled.amount, filled.amount * filled.price, 1)
    replaying = ReplayAfterClaim(repository)
    replaying.replay = (filled, fills, level)

    def copies() -> int:
        return sum(1 for o in exchange.engine.all_orders() if o.client_order_id == buy)

    async with running_trader(exchange, replaying, fence=lambda: NEW) as new:  # type: ignore[arg-type]
        assert replaying.refused  # the replay's level write lost to the new fence
        book = new.trader.book
        assert book is not None and book.state.level(-1).holding > 0
        exchange.set_price(SYMBOL, Decimal(1995))  # level -1 is in the buy window again
        await settle()
        exchange.set_price(SYMBOL, Decimal(1996))
        await until(lambda: client_order_id(TAG, -1, "sell", 1) in new.open_ids())
        assert copies() == 1  # bought once
    assert await repository.unapplied_order_ids(SYMBOL) == []
    grid = await repository.load_grid(SYMBOL)
    assert grid is not None and grid.level(-1).holding > 0 and grid.level(-1).cycle == 1
    await exchange.close()
    await repository.close()


async def test_a_buy_settled_and_its_unrecorded_sell_are_applied_in_order(
    tmp_path: Path,
) -> None:
    """The former owner recorded its buy as open, then, cut off from the database, saw it
    fill and sold the level: the new owner settles the buy and finds the sell unrecorded.
    Applied sell first, the sell's fills meet the level on the previous cycle and the
    level is sold a second time."""
    exchange = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await exchange.start()
    buy = client_order_id(TAG, -1, "buy", 0)
    sell = client_order_id(TAG, -1, "sell", 1)
    async with running_trader(exchange, repository, fence=lambda: FORMER, crash=True) as old:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: buy in old.open_ids())
    exchange.set_price(SYMBOL, Decimal(1989))  # the buy fills
    bought = await exchange.fetch_order_fills(SYMBOL, buy)
    held = sum((f.amount - (f.fee if f.fee_currency == "ETH" else 0) for f in bought), Decimal(0))
    await exchange.create_order(OrderRequest(SYMBOL, "sell", Decimal(2000), held, sell))
    exchange.set_price(SYMBOL, Decimal(2001))  # ... and its sell fills: a round trip
    assert (await exchange.fetch_order(SYMBOL, sell)).status == "filled"

    def copies(cid: str) -> int:
        return sum(1 for o in exchange.engine.all_orders() if o.client_order_id == cid)

    async with running_trader(exchange, repository, fence=lambda: NEW) as new:
        book = new.trader.book
        assert book is not None
        assert book.state.level(-1).holding == 0 and book.state.level(-1).cycle == 1
        exchange.set_price(SYMBOL, Decimal(2002))
        await until(lambda: client_order_id(TAG, -1, "buy", 1) in new.open_ids())
        assert copies(sell) == 1  # sold once
    trips = await repository.get_round_trips(SYMBOL)
    assert [(t.level, t.cycle) for t in trips] == [(-1, 1)]
    await exchange.close()
    await repository.close()


class NoFillChecks:
    """A repository whose fill check is unavailable (the database is cut off)."""

    def __init__(self, inner: SqlRepository) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def known_trade_ids(self, symbol: str, trade_ids: list[str]) -> set[str]:
        raise StorageUnavailable("known_trade_ids: the database is unavailable")


class FillsAtOnce(LossyExchange):
    """The price falls through the buy's price just as it is placed: it fills at once."""

    async def create_order(self, request: OrderRequest) -> Order:
        if request.side == "buy":
            self._inner.set_price(SYMBOL, request.price - 5)
        order: Order = await self._inner.create_order(request)
        return order


async def test_a_buy_that_fills_as_it_is_placed_needs_no_database_check(
    tmp_path: Path,
) -> None:
    """Its fills cannot have been applied by an earlier process: the level takes them even
    while the database cannot say which fills it knows."""
    inner = make_exchange(tmp_path)
    repository = make_repository(tmp_path)
    await repository.start()
    await inner.start()
    exchange = FillsAtOnce(inner, failures=0)
    async with running_trader(exchange, NoFillChecks(repository)) as run:  # type: ignore[arg-type]
        inner.set_price(SYMBOL, Decimal(2001))
        book = run.trader.book
        assert book is not None
        await until(lambda: book.state.level(0).holding > 0)
        assert book.unknown_ids() == []
    await inner.close()
    await repository.close()
