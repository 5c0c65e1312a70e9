"""Several symbols' executions in one transaction: ``record_batches`` on every backend, and
``GroupCommit`` gathering the traders' batches into it on a real SQLite repository."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.errors import StorageRejected, StorageUnavailable
from quantmesh.grid.state import LevelState
from quantmesh.storage.base import ExecutionBatch, TradeFilter
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.group_commit import GroupCommit
from quantmesh.storage.repository import SqlRepository
from tests.support import FakeClock

from .support import fill, order, round_trip

ETH, BTC, SOL = "ETH/USDT", "BTC/USDT", "SOL/USDT"
WAIT = 5.0


def batch(symbol: str, n: int = 1, *, fence: int = 1, price: str = "100") -> ExecutionBatch:
    """Order ``n`` of ``symbol`` bought (filled, one trade), its level held, a round trip."""
    cid = f"{symbol[:3]}-{n}"
    bought = order(cid, symbol=symbol, status="filled", filled="0.3", price=price)
    return ExecutionBatch(
        symbol,
        (order(cid, symbol=symbol, price=price), bought),
        (fill(f"t-{cid}", symbol=symbol, client_order_id=cid),),
        (LevelState(n, Decimal("0.3"), Decimal(30), 1),),
        (round_trip(n, symbol=symbol),),
        fence,
    )


async def stored(repo: SqlRepository, one: ExecutionBatch) -> bool:
    """Whether everything of ``one`` is in the database (its order, fill applied, level,
    round trip); ``False`` when none of it is (a partial write fails the test)."""
    cid = one.orders[0].client_order_id
    found = [
        await repo.get_order(cid) == one.orders[-1],
        await repo.known_trade_ids(one.symbol, [one.fills[0].trade_id]) == {one.fills[0].trade_id},
        len(await repo.get_round_trips(one.symbol)) == 1,
    ]
    grid = await repo.load_grid(one.symbol)
    assert grid is not None
    found.append(grid.levels.get(one.levels[0].index) == one.levels[0])
    assert all(found) or not any(found), f"{one.symbol} stored in part: {found}"
    return all(found)


async def grids(repo: SqlRepository, *symbols: str) -> None:
    for symbol in symbols:
        await repo.init_grid(symbol, Decimal(100))


# --- record_batches, on every backend ------------------------------------------------------


async def test_batches_of_several_symbols_are_stored_in_one_transaction(
    repo: SqlRepository,
) -> None:
    await grids(repo, ETH, BTC, SOL)
    batches = [batch(ETH), batch(BTC), batch(SOL)]
    assert await repo.record_batches(batches) == [True, True, True]
    for one in batches:
        assert await stored(repo, one)
    assert len(await repo.get_trades(TradeFilter())) == 3


async def test_a_stale_fence_leaves_its_batch_out_and_the_others_stored(
    repo: SqlRepository,
) -> None:
    await grids(repo, ETH, BTC, SOL)
    assert await repo.save_levels(BTC, [], fence=7)  # a newer owner of BTC
    batches = [batch(SOL), batch(BTC, fence=3), batch(ETH)]
    assert await repo.record_batches(batches) == [True, False, True]
    assert [await stored(repo, one) for one in batches] == [True, False, True]
    grid = await repo.load_grid(BTC)
    assert grid is not None and grid.fence == 7


async def test_one_batchs_bad_value_stores_no_batch(repo: SqlRepository) -> None:
    await grids(repo, ETH, BTC)
    bad = batch(BTC, price="NaN")
    with pytest.raises(StorageRejected, match="price"):
        await repo.record_batches([batch(ETH), bad])
    assert not await stored(repo, batch(ETH))
    assert await repo.get_order(bad.orders[0].client_order_id) is None


async def test_a_symbol_given_twice_is_refused_before_anything_is_written(
    repo: SqlRepository,
) -> None:
    await grids(repo, ETH)
    with pytest.raises(ValueError, match="one batch per symbol"):
        await repo.record_batches([batch(ETH, 1), batch(ETH, 2)])
    assert not await stored(repo, batch(ETH, 1))


# --- GroupCommit ---------------------------------------------------------------------------


class Recording(SqlRepository):
    """A real SQLite repository whose grouped transactions are held by ``gate``, counted
    and, for ``unavailable`` symbols, failed as an unreachable database fails them."""

    def __init__(self, path: Path) -> None:
        engine = create_engine_for("sqlite", str(path / "data" / "quantmesh.db"))
        super().__init__(engine, "binance", clock=FakeClock())
        self.gate = asyncio.Event()
        self.gate.set()
        self.groups: list[list[str]] = []
        self.began = asyncio.Event()  # set as a transaction begins
        self.unavailable: set[str] = set()

    async def record_batches(self, batches: Sequence[ExecutionBatch]) -> list[bool]:
        self.groups.append([b.symbol for b in batches])
        self.began.set()
        await self.gate.wait()
        if self.unavailable & {b.symbol for b in batches}:
            raise StorageUnavailable("record_batches failed: the database is unreachable")
        return await super().record_batches(batches)


@pytest.fixture
async def recording(tmp_path: Path) -> Recording:
    repo = Recording(tmp_path)
    await repo.start()
    await grids(repo, ETH, BTC, SOL)
    return repo


def give(group: GroupCommit, one: ExecutionBatch) -> asyncio.Task[bool]:
    return asyncio.create_task(
        group.record_batch(
            one.symbol, one.orders, one.fills, one.levels, one.round_trips, one.fence
        )
    )


async def holding(recording: Recording, group: GroupCommit) -> asyncio.Task[bool]:
    """A batch of SOL given alone, its transaction held at the gate (the gate closed)."""
    recording.gate.clear()
    running = give(group, batch(SOL))
    await held(recording, 1)
    return running


async def held(recording: Recording, groups: int) -> None:
    """Until ``groups`` transactions have begun (the last one waits at the gate)."""
    async with asyncio.timeout(WAIT):
        while len(recording.groups) < groups:
            recording.began.clear()
            await recording.began.wait()


async def test_a_batch_alone_is_stored_at_once_and_those_given_meanwhile_together(
    recording: Recording,
) -> None:
    group = GroupCommit(recording)
    recording.gate.clear()
    first = give(group, batch(ETH))
    await held(recording, 1)
    later = [give(group, batch(BTC)), give(group, batch(SOL))]
    await asyncio.sleep(0.01)
    assert recording.groups == [[ETH]]  # the others wait for the transaction running
    recording.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), WAIT) == [True, True, True]
    assert recording.groups == [[ETH], [BTC, SOL]]
    for symbol in (ETH, BTC, SOL):
        assert await stored(recording, batch(symbol))


async def test_a_symbols_second_batch_waits_for_the_next_transaction_in_order(
    recording: Recording,
) -> None:
    group = GroupCommit(recording)
    running = await holding(recording, group)
    sold = LevelState(1, Decimal(0), Decimal(0), 2)  # the level of batch(ETH), later
    tasks = [
        give(group, batch(ETH)),
        give(group, ExecutionBatch(ETH, (), (), (sold,), (), 1)),
        give(group, batch(BTC)),
    ]
    recording.gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, *tasks), WAIT) == [True] * 4
    assert recording.groups == [[SOL], [ETH, BTC], [ETH]]
    grid = await recording.load_grid(ETH)
    assert grid is not None and grid.level(1) == sold  # the later batch's state won


async def test_a_group_is_closed_at_its_record_limit(recording: Recording) -> None:
    group = GroupCommit(recording, limit=8)  # a batch here holds 2 orders, 1 fill, 1 level
    running = await holding(recording, group)
    tasks = [give(group, batch(ETH)), give(group, batch(BTC)), give(group, batch(SOL, 2))]
    recording.gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, *tasks), WAIT) == [True] * 4
    assert recording.groups == [[SOL], [ETH, BTC], [SOL]]


async def test_a_bad_batch_fails_its_own_writer_only(recording: Recording) -> None:
    group = GroupCommit(recording)
    running = await holding(recording, group)
    bad = batch(BTC, price="NaN")
    tasks = [give(group, batch(ETH)), give(group, bad)]
    recording.gate.set()
    assert await asyncio.wait_for(running, WAIT) is True
    assert await asyncio.wait_for(tasks[0], WAIT) is True
    with pytest.raises(StorageRejected, match="price"):
        await asyncio.wait_for(tasks[1], WAIT)
    # the group was refused whole, then each batch went alone
    assert recording.groups == [[SOL], [ETH, BTC], [ETH], [BTC]]
    assert await stored(recording, batch(ETH))
    assert await recording.get_order(bad.orders[0].client_order_id) is None


async def test_a_stale_fence_in_a_group_refuses_that_symbol_only(recording: Recording) -> None:
    assert await recording.save_levels(BTC, [], fence=9)
    group = GroupCommit(recording)
    running = await holding(recording, group)
    tasks = [give(group, batch(BTC, fence=2)), give(group, batch(ETH))]
    recording.gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, *tasks), WAIT) == [True, False, True]
    assert recording.groups == [[SOL], [BTC, ETH]]  # no second try: a refusal is no error
    assert not await stored(recording, batch(BTC, fence=2))
    assert await stored(recording, batch(ETH))


async def test_an_unreachable_database_fails_every_batch_of_the_group_once(
    recording: Recording,
) -> None:
    group = GroupCommit(recording)
    running = await holding(recording, group)
    recording.unavailable = {BTC}
    tasks = [give(group, batch(ETH)), give(group, batch(BTC))]
    recording.gate.set()
    assert await asyncio.wait_for(running, WAIT) is True
    for task in tasks:
        with pytest.raises(StorageUnavailable, match="unreachable"):
            await asyncio.wait_for(task, WAIT)
    assert recording.groups == [[SOL], [ETH, BTC]]  # not tried again one by one
    recording.unavailable = set()
    assert await asyncio.wait_for(give(group, batch(ETH)), WAIT) is True  # the group goes on


async def test_a_writer_that_stopped_waiting_before_its_turn_gets_nothing_stored(
    recording: Recording,
) -> None:
    group = GroupCommit(recording)
    running = await holding(recording, group)
    gone = give(group, batch(ETH))
    kept = give(group, batch(BTC))
    await asyncio.sleep(0)
    gone.cancel()
    recording.gate.set()
    assert list(await asyncio.wait_for(asyncio.gather(running, kept), WAIT)) == [True, True]
    assert gone.cancelled()
    assert recording.groups == [[SOL], [BTC]]
    assert not await stored(recording, batch(ETH))
