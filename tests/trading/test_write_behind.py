"""The write-behind: a trader's records stored after it moved on, in order, on a real
SQLite repository; a refused fence keeps the facts and stops the trader."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.domain import Fill, Order
from quantmesh.errors import LockLost, StorageRejected
from quantmesh.grid.state import LevelState, RoundTrip
from quantmesh.storage.base import ExecutionBatch
from quantmesh.storage.group_commit import GroupCommit
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.write_behind import WriteBehind

from .support import SYMBOL, make_exchange, make_repository, running_trader, until


def order(cid: str, status: str = "open", filled: str = "0") -> Order:
    return Order(
        symbol=SYMBOL,
        side="buy",
        price=Decimal(1990),
        amount=Decimal("0.015"),
        client_order_id=cid,
        exchange_order_id=f"x-{cid}",
        status=status,  # type: ignore[arg-type]
        filled=Decimal(filled),
        created_at=1_000.0,
        updated_at=1_000.0,
    )


def fill(cid: str, trade_id: str) -> Fill:
    return Fill(
        symbol=SYMBOL,
        side="buy",
        price=Decimal(1990),
        amount=Decimal("0.015"),
        fee=Decimal("0.00001"),
        fee_currency="ETH",
        trade_id=trade_id,
        client_order_id=cid,
        exchange_order_id=f"x-{cid}",
        ts=1_001.0,
    )


class Gated(SqlRepository):
    """A real repository whose batched writes wait for ``gate`` and are counted."""

    def __init__(self, inner: SqlRepository) -> None:
        super().__init__(inner._engine, inner.exchange)
        self.gate = asyncio.Event()
        self.gate.set()
        self.batches: list[int] = []
        self.groups: list[list[str]] = []  # the symbols of each grouped transaction

    async def record_batch(
        self,
        symbol: str,
        orders: Sequence[Order],
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int | None,
        *,
        operation: str = "record_batch",
    ) -> bool:
        await self.gate.wait()
        self.batches.append(len(orders))
        return await super().record_batch(
            symbol, orders, fills, levels, round_trips, fence, operation=operation
        )

    async def record_batches(self, batches: Sequence[ExecutionBatch]) -> list[bool]:
        self.groups.append([b.symbol for b in batches])
        await self.gate.wait()
        return await super().record_batches(batches)


@pytest.fixture
async def repo(tmp_path: Path) -> Gated:
    repository = Gated(make_repository(tmp_path))
    await repository.start()
    await repository.init_grid(SYMBOL, Decimal(2000))
    return repository


async def test_records_are_stored_in_order_and_read_back_after_the_queue(repo: Gated) -> None:
    writes = WriteBehind(repo, SYMBOL, fence=lambda: 1)
    repo.gate.clear()
    await writes.save_orders([order("b1")])
    level = LevelState(index=-1, holding=Decimal("0.015"), cost=Decimal("29.85"), cycle=0)
    filled = order("b1", "filled", "0.015")
    assert await writes.record_execution(filled, [fill("b1", "t1")], [level], [], fence=1)
    assert writes.queued == 2 and repo.batches == []  # nothing stored yet: the caller went on
    repo.gate.set()
    assert await writes.get_open_orders(SYMBOL) == []  # a read waits for the queue
    assert await writes.known_trade_ids(SYMBOL, ["t1"]) == {"t1"}
    grid = await repo.load_grid(SYMBOL)
    assert grid is not None and grid.level(-1).holding == Decimal("0.015")
    assert repo.batches == [2]  # both in one transaction, the order updates in sequence
    stored = await repo.get_order("b1")
    assert stored is not None and stored.status == "filled"


async def test_traders_sharing_a_group_commit_store_their_runs_in_one_transaction(
    repo: Gated,
) -> None:
    symbols = (SYMBOL, "BTC/USDT", "SOL/USDT")
    for symbol in symbols[1:]:
        await repo.init_grid(symbol, Decimal(2000))
    group = GroupCommit(repo)
    writes = [WriteBehind(repo, s, fence=lambda: 1, group=group) for s in symbols]
    level = LevelState(index=-1, holding=Decimal("0.015"), cost=Decimal("29.85"), cycle=0)

    async def execute(n: int) -> None:
        filled = replace(order(f"b{n}", "filled", "0.015"), symbol=symbols[n])
        done = replace(fill(f"b{n}", f"t{n}"), symbol=symbols[n])
        assert await writes[n].record_execution(filled, [done], [level], [], fence=1)

    repo.gate.clear()
    await execute(2)
    await until(lambda: repo.groups == [[symbols[2]]])  # its transaction waits at the gate
    await execute(0)
    await execute(1)
    await asyncio.sleep(0.05)  # both drains handed their queues to the group
    repo.gate.set()
    for writer in writes:
        await asyncio.wait_for(writer.flush(), 5)
    assert [sorted(g) for g in repo.groups] == [[symbols[2]], sorted(symbols[:2])]
    assert repo.batches == []  # no transaction of one symbol's own
    for n, symbol in enumerate(symbols):
        assert await repo.known_trade_ids(symbol, [f"t{n}"]) == {f"t{n}"}
        grid = await repo.load_grid(symbol)
        assert grid is not None and grid.level(-1) == level


async def test_a_refused_fence_keeps_the_facts_and_stops_the_trader(repo: Gated) -> None:
    assert await repo.save_levels(SYMBOL, [], 9)  # a newer owner
    refused: list[bool] = []
    writes = WriteBehind(repo, SYMBOL, fence=lambda: 3, on_failure=lambda: refused.append(True))
    watch = asyncio.create_task(writes.watch())
    level = LevelState(index=-1, holding=Decimal("0.015"), cost=Decimal("29.85"), cycle=0)
    filled = order("b1", "filled", "0.015")
    repo.gate.clear()
    assert await writes.record_execution(filled, [fill("b1", "t1")], [level], [], fence=3)
    later = order("b2", "filled", "0.015")  # queued under another fence: a second batch
    assert await writes.record_execution(later, [fill("b2", "t2")], [level], [], fence=4)
    repo.gate.set()
    with pytest.raises(LockLost):
        await asyncio.wait_for(watch, 5)
    assert refused[0] is True
    with pytest.raises(LockLost):
        await writes.save_orders([order("b3")])  # nothing more is taken
    # every queued fill is kept, none applied: the new owner applies them
    assert await repo.unapplied_order_ids(SYMBOL) == ["b1", "b2"]
    assert writes.queued == 0
    grid = await repo.load_grid(SYMBOL)
    assert grid is not None and grid.fence == 9 and not grid.levels


async def test_a_write_the_database_refuses_stops_the_trader_with_its_error(
    repo: Gated, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*_: object, **__: object) -> bool:
        raise StorageRejected("value too long for column")

    monkeypatch.setattr(repo, "record_batch", refuse)
    writes = WriteBehind(repo, SYMBOL, fence=lambda: 1)
    await writes.save_orders([order("b1")])
    with pytest.raises(StorageRejected, match="too long"):
        await asyncio.wait_for(writes.watch(), 5)
    with pytest.raises(StorageRejected):
        await writes.flush()


async def test_close_waits_for_the_queue_even_when_cancelled(repo: Gated) -> None:
    writes = WriteBehind(repo, SYMBOL, fence=lambda: 1)
    repo.gate.clear()
    await writes.save_orders([order("b1")])
    closing = asyncio.create_task(writes.close())
    await asyncio.sleep(0.05)
    closing.cancel()  # a second stop signal: the write still lands before close ends
    await asyncio.sleep(0.05)
    assert not closing.done()
    repo.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(closing, 5)
    assert await repo.get_order("b1") is not None


async def test_a_full_queue_makes_the_writer_wait(repo: Gated) -> None:
    writes = WriteBehind(repo, SYMBOL, fence=lambda: 1, limit=2)
    repo.gate.clear()
    await writes.save_orders([order("b1")])
    await writes.save_orders([order("b2")])
    third = asyncio.create_task(writes.save_orders([order("b3")]))
    await asyncio.sleep(0.05)
    assert not third.done()  # back pressure: the database is behind
    repo.gate.set()
    await asyncio.wait_for(third, 5)
    await writes.flush()
    assert {o.client_order_id for o in await repo.get_open_orders(SYMBOL)} == {"b1", "b2", "b3"}


async def test_the_sell_goes_out_before_the_fill_is_stored(tmp_path: Path) -> None:
    """The point of it: the next order does not wait for the database."""
    exchange = make_exchange(tmp_path)
    repository = Gated(make_repository(tmp_path))
    await repository.start()
    await exchange.start()
    async with running_trader(exchange, repository) as run:
        exchange.set_price(SYMBOL, Decimal(2001))
        await until(lambda: len(run.open_ids()) == 3)
        repository.gate.clear()  # the database stalls from here
        exchange.set_price(SYMBOL, Decimal(1999))  # B0.0 fills
        book = run.trader.book
        assert book is not None
        await until(lambda: book.state.level(0).holding > 0)  # applied in memory
        exchange.set_price(SYMBOL, Decimal(1998))  # the next price: its sell is placed

        def sells() -> list[str]:
            return [
                o.client_order_id for o in exchange.engine.open_orders(SYMBOL) if o.side == "sell"
            ]

        await until(lambda: len(sells()) == 1)
        grid = await repository.load_grid(SYMBOL)  # the database, behind the trader
        assert grid is not None and grid.level(0).holding == 0
        assert run.metric("quantmesh_db_write_queue", symbol=SYMBOL) >= 2  # the fill, the sell
        repository.gate.set()
        await until(lambda: run.metric("quantmesh_db_write_queue", symbol=SYMBOL) == 0)
    grid = await repository.load_grid(SYMBOL)  # stored by the time the trader stopped
    assert grid is not None and grid.level(0).holding == Decimal("0.015")
    stored = await repository.get_order(sells()[0])
    assert stored is not None and stored.status == "open"
    await exchange.close()
    await repository.close()
