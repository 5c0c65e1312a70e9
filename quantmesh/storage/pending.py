"""``PendingWrites``: the buffered writes waiting for the database, journal and memory queue.

The state the write buffer and the replayer share: ``BufferedRepository`` appends to it,
the ``Replayer`` takes batches off its head. Both hold ``lock`` while they change it, so
the database sees the writes in the order they were made.

Every record is appended to the journal (fsynced) and to a bounded in-memory queue. When
the queue holds ``capacity`` records, new ones go to the journal only and are read back
from it once the queue has drained: memory stays bounded, nothing is dropped. A record the
journal cannot take is kept in memory only (``volatile``), loudly (see ``append``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

import structlog

from quantmesh.observability.metrics import DbMetrics
from quantmesh.storage.journal import Journal, JournalError
from quantmesh.storage.records import Record

log = structlog.get_logger(__name__)


class PendingWrites:
    """The buffered writes, oldest first: a bounded memory queue over the journal."""

    def __init__(
        self, journal: Journal, *, capacity: int, metrics: DbMetrics | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError("buffer_size must be at least 1")
        self.lock = asyncio.Lock()  # one write at a time: direct or appended, in order
        self._journal = journal
        self._capacity = capacity
        self._metrics = metrics
        self._memory: deque[Record] = deque()
        self._volatile: set[int] = set()  # seqs held in memory only: their journal append failed
        self._spilled = 0  # records in the journal only (the memory queue was full)
        self._spill_offset: int | None = None  # where the first of them starts

    @property
    def count(self) -> int:
        """Buffered writes not yet in the database."""
        return len(self._memory) + self._spilled

    @property
    def in_memory(self) -> int:
        return len(self._memory)

    @property
    def volatile(self) -> int:
        """Buffered writes held in memory only (the journal refused them)."""
        return len(self._volatile)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def journal_path(self) -> Path:
        return self._journal.path

    async def open(self) -> int:
        """Open the journal and load what a previous run left in it; return the sequence
        number to go on from: the highest loaded, plus one per record left in the journal
        only (0 when empty)."""
        await asyncio.to_thread(self._journal.open)
        chunk = await asyncio.to_thread(self._journal.read, 0, self._capacity)
        self._memory.extend(chunk.records)
        if not chunk.at_end:
            self._spill_offset = chunk.next_offset
            self._spilled = await asyncio.to_thread(self._journal.count_lines, chunk.next_offset)
        self.report()
        # sequence numbers only name records in logs and dead letters; keep them growing
        return max((record.seq for record in chunk.records), default=0) + self._spilled

    def close(self) -> None:
        self._journal.close()

    async def append(self, operation: str, record: Record) -> None:
        """Journal ``record`` (durably), then queue it in memory unless the queue is full or
        older records wait in the journal only. The caller holds ``lock``.

        A journal that cannot take the record (disk full, EIO, permissions; the journal
        keeps none of it) costs its durability, not the write: it is kept in memory when
        the queue has room and no older record waits in the journal only, and an error is
        logged and counted (``quantmesh_db_errors_total{operation="journal_append"}``);
        the database still gets it, only a crash before the replay would lose it. Failing
        the write instead would stop the trader on every fill while the orders it already
        placed go on filling. When memory cannot take it either, ``JournalError`` names
        the journal and the OS error.
        """
        try:
            offset = await asyncio.to_thread(self._journal.append, [record])
        except JournalError as exc:
            self._keep_volatile(operation, record, exc)
            return
        if self._spill_offset is None and len(self._memory) < self._capacity:
            self._memory.append(record)
        else:
            if self._spill_offset is None:
                self._spill_offset = offset
                log.warning("db_buffer_memory_full", size=self._capacity)
            self._spilled += 1
        self._buffered(operation)

    def _keep_volatile(self, operation: str, record: Record, error: JournalError) -> None:
        """Keep ``record``, which the journal refused, in memory only; ``JournalError``
        when memory cannot take it either."""
        if self._metrics is not None:
            self._metrics.errors.labels("journal_append", "journal").inc()
        if self._spill_offset is not None or len(self._memory) >= self._capacity:
            log.error("db_write_not_buffered", operation=operation, error=str(error))
            raise JournalError(
                f"{operation}: the database is unavailable and {error}; the memory buffer "
                f"is full ({self.count} writes wait)"
            ) from error
        log.error(
            "db_journal_write_failed",
            operation=operation,
            seq=record.seq,
            kept="memory only: lost if the process dies before the replay",
            error=str(error),
        )
        self._memory.append(record)
        self._volatile.add(record.seq)
        self._buffered(operation)

    def _buffered(self, operation: str) -> None:
        if self._metrics is not None:
            self._metrics.buffered.labels(operation).inc()
        self.report()

    async def next_batch(self, max_rows: int) -> list[Record]:
        """The oldest buffered records, up to ``max_rows`` rows (at least one record;
        refilled from the journal when the memory queue ran empty)."""
        if not self._memory and self._spill_offset is not None:
            async with self.lock:
                await self._refill(self._spill_offset)
        batch: list[Record] = []
        rows = 0
        for record in self._memory:
            if batch and rows + record.size > max_rows:
                break
            batch.append(record)
            rows += record.size
        return batch

    async def _refill(self, offset: int) -> None:
        """Read the records waiting in the journal only, from ``offset`` on, into the
        memory queue (as many as it holds)."""
        chunk = await asyncio.to_thread(self._journal.read, offset, self._capacity)
        self._memory.extend(chunk.records)
        if chunk.at_end:
            self._spill_offset, self._spilled = None, 0
        else:
            self._spill_offset = chunk.next_offset
            self._spilled = max(self._spilled - len(chunk.records), 1)

    async def remove(self, batch: list[Record]) -> None:
        """Take the replayed ``batch`` (from ``next_batch``) off the head, under ``lock``.

        ``count`` is what callers (readiness, shutdown, tests) watch for "drained", so it
        must not read 0 before the rest of the bookkeeping is done: the journal is emptied
        first (the one await), then the records leave the queue and the metrics move in one
        step with no await between. A cancellation during the emptying leaves the batch
        buffered; replaying it again changes nothing.
        """
        async with self.lock:
            if self.count == len(batch):  # the batch is all that is left
                await asyncio.to_thread(self._journal.clear)
            for _ in batch:
                self._volatile.discard(self._memory.popleft().seq)
            if self._metrics is not None:
                self._metrics.replayed.inc(len(batch))
            self.report()

    def report(self) -> None:
        """Set the buffer's gauges: depth, records in memory, journal size."""
        if self._metrics is None:
            return
        self._metrics.buffer_depth.set(self.count)
        self._metrics.buffer_memory.set(len(self._memory))
        self._metrics.journal_bytes.set(self._journal.size())
