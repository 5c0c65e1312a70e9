"""``PendingWrites`` on its own: the memory bound over a real journal, batches off the head."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quantmesh.storage.journal import DeadLetters, Journal, dead_letter_path
from quantmesh.storage.pending import PendingWrites
from quantmesh.storage.records import Record

from .support import fill


def journal_at(path: Path) -> Journal:
    return Journal(path, DeadLetters(dead_letter_path(path)))


def fills_record(seq: int, count: int = 1) -> Record:
    return Record(seq, "fills", fills=tuple(fill(f"t{seq}-{n}") for n in range(count)))


async def append(pending: PendingWrites, *records: Record) -> None:
    for record in records:
        async with pending.lock:
            await pending.append("save_fills", record)


@pytest.fixture
async def pending(tmp_path: Path) -> AsyncIterator[PendingWrites]:
    pending = PendingWrites(journal_at(tmp_path / "journal.jsonl"), capacity=2)
    await pending.open()
    yield pending
    pending.close()


async def test_records_beyond_the_capacity_wait_in_the_journal_only(
    pending: PendingWrites,
) -> None:
    await append(pending, *(fills_record(seq) for seq in range(1, 6)))
    assert (pending.count, pending.in_memory, pending.volatile) == (5, 2, 0)
    taken: list[list[int]] = []
    while batch := await pending.next_batch(2000):
        taken.append([record.seq for record in batch])
        await pending.remove(batch)
    assert taken == [[1, 2], [3, 4], [5]]  # refilled from the journal, in order
    assert pending.count == 0
    assert pending.journal_path.stat().st_size == 0


async def test_a_batch_holds_up_to_max_rows_and_at_least_one_record(
    pending: PendingWrites,
) -> None:
    await append(pending, fills_record(1, count=3), fills_record(2))
    (big,) = await pending.next_batch(2)
    assert big.seq == 1
    await pending.remove([big])
    assert [record.seq for record in await pending.next_batch(2)] == [2]


async def test_open_loads_what_a_previous_run_left(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    earlier = journal_at(path)
    earlier.open()
    earlier.append([fills_record(seq) for seq in (4, 5, 6)])
    earlier.close()
    pending = PendingWrites(journal_at(path), capacity=2)
    try:
        assert await pending.open() == 6  # sequence numbers go on growing
        assert (pending.count, pending.in_memory) == (3, 2)
    finally:
        pending.close()


def test_the_capacity_is_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PendingWrites(journal_at(tmp_path / "journal.jsonl"), capacity=0)
