"""The ``Replayer`` on its own: pending writes in a real journal, a hand-written database
that records what the replay writes, and a clock the test moves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from quantmesh.domain import Fill, Order
from quantmesh.errors import StorageError, StorageRejected, StorageUnavailable
from quantmesh.grid.state import GridShape, LevelState, RoundTrip
from quantmesh.storage.journal import DeadLetters, Journal, dead_letter_path
from quantmesh.storage.pending import PendingWrites
from quantmesh.storage.records import Record
from quantmesh.storage.replay import STUCK_ROUNDS, STUCK_SECONDS, Replayer
from tests.support import FakeClock
from tests.trading.support import until

from .support import SYMBOL, fill, order


class FakeDatabase:
    """Records the replay's writes (kind and trade or order ids, fence, level count).
    ``failure`` fails every write; a fill named in ``refused`` is refused for its data;
    a grid write with a fence older than ``fence`` is refused."""

    def __init__(self) -> None:
        self.writes: list[tuple[object, ...]] = []
        self.failure: StorageError | None = None
        self.refused: set[str] = set()
        self.fence = 0

    def _check(self, fills: Sequence[Fill] = ()) -> None:
        if self.failure is not None:
            raise self.failure
        refused = [item.trade_id for item in fills if item.trade_id in self.refused]
        if refused:
            raise StorageRejected(f"save_fills failed: bad value in {refused}")

    async def save_orders(self, orders: Sequence[Order]) -> None:
        self._check()
        self.writes.append(("orders", *(item.client_order_id for item in orders)))

    async def save_fills(self, fills: Sequence[Fill]) -> None:
        self._check(fills)
        self.writes.append(("fills", *(item.trade_id for item in fills)))

    async def save_round_trips(self, trips: Sequence[RoundTrip]) -> None:
        self._check()
        self.writes.append(("round_trips", len(trips)))

    async def set_grid_shape(self, symbol: str, shape: GridShape, fence: int) -> bool:
        self._check()
        return fence >= self.fence

    async def record_batch(
        self,
        symbol: str,
        orders: Sequence[Order],
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int | None,
    ) -> bool:
        self._check(fills)
        if fence is not None and fence < self.fence:
            return False
        trade_ids = tuple(item.trade_id for item in fills)
        self.writes.append(("batch", fence, *trade_ids, f"{len(levels)} levels"))
        return True


@dataclass
class Setup:
    replayer: Replayer
    pending: PendingWrites
    database: FakeDatabase
    clock: FakeClock
    dead_letters: Path

    async def buffer(self, *records: Record) -> None:
        for record in records:
            async with self.pending.lock:
                await self.pending.append("test", record)

    def dead(self) -> list[dict[str, Any]]:
        if not self.dead_letters.exists():
            return []
        return [json.loads(line) for line in self.dead_letters.read_text().splitlines()]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    journal_path = tmp_path / "journal.jsonl"
    dead_letters = DeadLetters(dead_letter_path(journal_path))
    pending = PendingWrites(Journal(journal_path, dead_letters), capacity=100)
    await pending.open()
    database, clock = FakeDatabase(), FakeClock(1000.0)
    replayer = Replayer(database, pending, dead_letters, retry_interval=3600, clock=clock)
    yield Setup(replayer, pending, database, clock, dead_letters.path)
    await replayer.stop()
    pending.close()


def fills_record(seq: int, *trade_ids: str) -> Record:
    return Record(seq, "fills", fills=tuple(fill(trade_id) for trade_id in trade_ids))


async def test_flush_replays_in_order_merging_runs_of_one_kind(setup: Setup) -> None:
    await setup.buffer(
        fills_record(1, "t1"),
        fills_record(2, "t2"),
        Record(3, "orders", orders=(order("c1"),)),
        fills_record(4, "t3"),
    )
    assert await setup.replayer.flush() == 4
    assert setup.database.writes == [("fills", "t1", "t2"), ("orders", "c1"), ("fills", "t3")]
    assert setup.pending.count == 0
    assert setup.pending.journal_path.stat().st_size == 0
    assert await setup.replayer.flush() == 0


async def test_a_write_refused_for_its_data_is_dead_lettered_and_the_rest_stored(
    setup: Setup,
) -> None:
    setup.database.refused = {"bad"}
    await setup.buffer(fills_record(1, "t1"), fills_record(2, "bad"), fills_record(3, "t3"))
    assert await setup.replayer.flush() == 3
    assert setup.database.writes == [("fills", "t1"), ("fills", "t3")]
    (dead,) = setup.dead()
    assert dead["record"]["seq"] == 2
    assert "bad value" in dead["reason"]


async def test_grid_writes_under_a_stale_fence_keep_their_facts_only(setup: Setup) -> None:
    setup.database.fence = 5  # a newer owner claimed the grid
    execution = Record(
        1,
        "execution",
        symbol=SYMBOL,
        orders=(order("c1", status="filled", filled="0.3"),),
        fills=(fill("x1"),),
        levels=(LevelState(1, Decimal("0.3"), Decimal(30), 1),),
        fence=3,
    )
    await setup.buffer(execution)
    assert await setup.replayer.flush() == 1
    assert setup.database.writes == [("batch", None, "x1", "0 levels")]
    (dead,) = setup.dead()
    assert "stale fence" in dead["reason"]


async def test_a_write_failing_alike_for_enough_rounds_and_time_is_set_aside(
    setup: Setup,
) -> None:
    setup.database.failure = StorageError("save_fills failed: no such table")
    await setup.buffer(fills_record(1, "t1"))
    for _ in range(STUCK_ROUNDS):  # enough rounds, but no time has passed
        with pytest.raises(StorageUnavailable, match="no such table"):
            await setup.replayer.flush()
    assert setup.pending.count == 1
    setup.clock.now += STUCK_SECONDS
    with capture_logs() as logs:
        assert await setup.replayer.flush() == 1
    assert setup.pending.count == 0
    (dead,) = setup.dead()
    assert f"failed {STUCK_ROUNDS + 1} replay rounds" in dead["reason"]
    assert "stored nothing of it" in dead["reason"]
    assert any(entry["event"] == "db_replay_stuck" for entry in logs)


async def test_reads_wake_the_replayer_at_most_once_a_second_of_its_clock(
    setup: Setup,
) -> None:
    await setup.replayer.start()  # nothing waits: the next replay is a retry_interval away
    await setup.buffer(fills_record(1, "t1"))
    setup.replayer.wake()
    await until(lambda: setup.pending.count == 0)
    await setup.buffer(fills_record(2, "t2"))
    setup.clock.now += 0.5
    setup.replayer.wake()  # too soon after the last replay
    await asyncio.sleep(0.1)
    assert setup.pending.count == 1
    setup.clock.now += 0.5
    setup.replayer.wake()
    await until(lambda: setup.pending.count == 0)
    assert setup.database.writes == [("fills", "t1"), ("fills", "t2")]


async def test_stop_leaves_what_the_database_cannot_take_in_the_journal(setup: Setup) -> None:
    setup.database.failure = StorageUnavailable("save_fills: database unavailable")
    await setup.buffer(fills_record(1, "t1"))
    with capture_logs() as logs:
        await setup.replayer.start()
        await setup.replayer.stop()
    events = [entry["event"] for entry in logs]
    assert events == ["db_journal_found", "db_replay_postponed", "db_buffer_left_in_journal"]
    assert setup.pending.count == 1
    assert setup.pending.journal_path.stat().st_size > 0
    assert setup.database.writes == []
