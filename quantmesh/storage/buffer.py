"""``BufferedRepository``: the ``Repository`` that keeps every write through a database outage.

It wraps a ``SqlRepository``. While nothing is buffered, every call goes straight to the
database. A write that fails for any reason but its data (connectivity, a read-only or
full server, a timeout: everything but ``StorageRejected``, as in the replay) is appended
to the journal (fsynced) and to a bounded in-memory queue before the caller continues;
a journal that cannot take it (disk full, EIO) leaves it in memory only, loudly (see
``_append``), and a writer cancelled meanwhile still leaves it buffered; from then
on every write is buffered the same way, in arrival order, until the replayer has drained
the buffer, so the database sees the writes in the order they were made. When the memory
queue holds ``buffer_size`` records, new ones go to the journal only and are read back
from it once the queue has drained: memory stays bounded, nothing is dropped.

The replayer runs at start, every ``retry_interval`` seconds, and early when a read finds
writes waiting. It replays in order and in batches: runs of the same kind of write are
merged into one transaction (fills into one multi-row insert, executions of one symbol
and fence into one ``record_batch``), every write an idempotent upsert keyed on the
records' unique keys, so a batch replayed twice (a crash before the journal was emptied)
changes nothing. A batch that fails for any reason but its data stays buffered for the
next round (and is logged); a write the database refuses for its data (constraint, type,
length: ``StorageRejected``) goes to the dead-letter file with the reason instead of
blocking the rest. So does, with its facts stored where possible, a record that failed
with the same non-connectivity error for ``STUCK_ROUNDS`` rounds and ``STUCK_SECONDS``
(a grid the database no longer has). Dead letters are written in a thread, one fsync per
batch, before the batch leaves the journal.

What each call does while writes are buffered:

- ``save_order(s)``, ``save_fill(s)``, ``save_round_trip``: buffered, return ``None``.
- ``record_execution``, ``save_levels``, ``set_grid_shape``: buffered, return ``True``.
  These compare-and-set the grid's fence, which cannot be checked without the database;
  the caller holds the symbol's lease and trades on from memory. On replay, a stale fence
  (another instance took the grid over meanwhile) keeps the facts - the order updates,
  fills and round trips are stored anyway, a fill is never lost - while the grid levels
  written under the stale fence go to the dead-letter file and an error is logged. Those
  fills are stored as not applied to their levels (``record_batch`` with ``fence=None``):
  the new owner finds them (``unapplied_order_ids``) and applies them itself.
- reads, ``init_grid`` and ``save_last_price``: raise ``StorageUnavailable`` naming how
  many writes wait; a read answered from the database alone would miss them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.domain import Fill, Order
from quantmesh.errors import StorageError, StorageRejected, StorageUnavailable
from quantmesh.grid.state import GridShape, GridState, LevelState, RoundTrip
from quantmesh.observability.metrics import DbMetrics
from quantmesh.storage.base import SymbolSummary, TradeFilter
from quantmesh.storage.journal import (
    DeadLetter,
    DeadLetters,
    Journal,
    JournalError,
    dead_letter_path,
)
from quantmesh.storage.records import Record, describe
from quantmesh.storage.repository import SqlRepository

log = structlog.get_logger(__name__)
_R = TypeVar("_R")

BATCH_ROWS: Final = 2000  # rows per replayed transaction
_MIN_WAKE_INTERVAL: Final = 1.0  # reads wake the replayer at most this often (s)
_CLOSE_FLUSH_TIMEOUT: Final = 5.0
# a record failing replay with the same non-connectivity error this many rounds and this
# long is set aside (dead-lettered, its facts stored if possible) instead of blocking the rest
STUCK_ROUNDS: Final = 10
STUCK_SECONDS: Final = 300.0


class BufferedRepository:
    """A ``Repository`` that buffers writes through outages; see the module docstring."""

    def __init__(
        self,
        inner: SqlRepository,
        journal_path: Path,
        *,
        buffer_size: int = 10000,
        retry_interval: float = 10.0,
        metrics: DbMetrics | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self._inner = inner
        self._dead = DeadLetters(dead_letter_path(journal_path))
        self._journal = Journal(journal_path, self._dead)
        self._buffer_size = buffer_size
        self._retry_interval = retry_interval
        self._metrics = metrics
        self._memory: deque[Record] = deque()
        self._volatile: set[int] = set()  # seqs held in memory only: their journal append failed
        self._spilled = 0  # records in the journal only (the memory queue was full)
        self._spill_offset: int | None = None  # where the first of them starts
        self._seq = 0
        self._write_lock = asyncio.Lock()  # one write at a time: direct or appended, in order
        self._replay_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_attempt = 0.0
        self._task: asyncio.Task[None] | None = None
        self._dead_batch: list[DeadLetter] = []  # dead letters of the batch being replayed
        self._stuck: tuple[int, str] | None = None  # (seq, error) of a group that keeps failing
        self._stuck_rounds = 0
        self._stuck_since = 0.0

    @property
    def exchange(self) -> str:
        return self._inner.exchange

    @property
    def inner(self) -> SqlRepository:
        return self._inner

    @property
    def pending(self) -> int:
        """Buffered writes not yet in the database."""
        return len(self._memory) + self._spilled

    @property
    def memory_records(self) -> int:
        return len(self._memory)

    @property
    def volatile(self) -> int:
        """Buffered writes held in memory only (the journal refused them): a crash now would
        lose them, so the trader places nothing new until they are stored."""
        return len(self._volatile)

    @property
    def journal_path(self) -> Path:
        return self._journal.path

    @property
    def dead_letter_path(self) -> Path:
        return self._dead.path

    # lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the database (``StartupError`` if unusable), then replay the journal a
        previous run left before anything reads the database."""
        await self._inner.start()
        await asyncio.to_thread(self._journal.open)
        await self._load_journal()
        if self.pending:
            log.warning("db_journal_found", pending=self.pending, path=str(self.journal_path))
            try:
                await self.flush()
            except StorageUnavailable as exc:
                log.warning("db_replay_postponed", pending=self.pending, error=str(exc))
        self._task = asyncio.create_task(self._replay_loop(), name="db-replayer")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self.pending:
            try:
                async with asyncio.timeout(_CLOSE_FLUSH_TIMEOUT):
                    await self.flush()
            except (StorageUnavailable, TimeoutError) as exc:
                log.warning(
                    "db_buffer_left_in_journal",
                    pending=self.pending,
                    path=str(self.journal_path),
                    error=str(exc) or "timed out",
                )
        self._journal.close()
        await self._inner.close()

    async def _load_journal(self) -> None:
        chunk = await asyncio.to_thread(self._journal.read, 0, self._buffer_size)
        self._memory.extend(chunk.records)
        if not chunk.at_end:
            self._spill_offset = chunk.next_offset
            self._spilled = await asyncio.to_thread(self._journal.count_lines, chunk.next_offset)
        # sequence numbers only name records in logs and dead letters; keep them growing
        self._seq = max((r.seq for r in chunk.records), default=0) + self._spilled
        self._report()

    # writes -------------------------------------------------------------------------------

    async def save_order(self, order: Order) -> None:
        await self.save_orders([order])

    async def save_orders(self, orders: Sequence[Order]) -> None:
        if orders:
            batch = tuple(orders)
            await self._write(
                "save_orders",
                lambda seq: Record(seq, "orders", orders=batch),
                lambda: self._inner.save_orders(batch),
                None,
            )

    async def save_fill(self, fill: Fill) -> None:
        await self.save_fills([fill])

    async def save_fills(self, fills: Sequence[Fill]) -> None:
        if fills:
            batch = tuple(fills)
            await self._write(
                "save_fills",
                lambda seq: Record(seq, "fills", fills=batch),
                lambda: self._inner.save_fills(batch),
                None,
            )

    async def save_round_trip(self, trip: RoundTrip) -> None:
        await self.save_round_trips([trip])

    async def save_round_trips(self, trips: Sequence[RoundTrip]) -> None:
        if trips:
            batch = tuple(trips)
            await self._write(
                "save_round_trips",
                lambda seq: Record(seq, "round_trips", round_trips=batch),
                lambda: self._inner.save_round_trips(batch),
                None,
            )

    async def save_levels(self, symbol: str, levels: Sequence[LevelState], fence: int) -> bool:
        batch = tuple(levels)
        return await self._write(
            "save_levels",
            lambda seq: Record(seq, "levels", symbol=symbol, levels=batch, fence=fence),
            lambda: self._inner.save_levels(symbol, batch, fence),
            True,
        )

    async def set_grid_shape(self, symbol: str, shape: GridShape, fence: int) -> bool:
        return await self._write(
            "set_grid_shape",
            lambda seq: Record(seq, "shape", symbol=symbol, shape=shape, fence=fence),
            lambda: self._inner.set_grid_shape(symbol, shape, fence),
            True,
        )

    async def record_execution(
        self,
        order: Order,
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int,
    ) -> bool:
        f, lv, rt = tuple(fills), tuple(levels), tuple(round_trips)
        return await self._write(
            "record_execution",
            lambda seq: Record(
                seq,
                "execution",
                symbol=order.symbol,
                orders=(order,),
                fills=f,
                levels=lv,
                round_trips=rt,
                fence=fence,
            ),
            lambda: self._inner.record_execution(order, f, lv, rt, fence),
            True,
        )

    async def _write(
        self,
        operation: str,
        record: Callable[[int], Record],
        direct: Callable[[], Awaitable[_R]],
        buffered: _R,
    ) -> _R:
        async with self._write_lock:
            if not self.pending:
                try:
                    return await direct()
                except StorageRejected:
                    raise  # the data itself: buffering it would only block the writes after it
                except StorageUnavailable as exc:
                    log.warning("db_unavailable_buffering", operation=operation, error=str(exc))
                except StorageError as exc:  # as the replay does: the data is not at fault
                    log.error("db_write_failed_buffering", operation=operation, error=str(exc))
            self._seq += 1
            await _run_to_end(self._append(operation, record(self._seq)))
            return buffered

    async def _append(self, operation: str, record: Record) -> None:
        """Journal ``record`` (durably), then queue it in memory unless the queue is full or
        older records wait in the journal only. Runs under the write lock, to the end even
        when the writer is cancelled (``_run_to_end``): a record in the journal is in the
        buffer too.

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
            if self._metrics is not None:
                self._metrics.errors.labels("journal_append", "journal").inc()
            if self._spill_offset is not None or len(self._memory) >= self._buffer_size:
                log.error("db_write_not_buffered", operation=operation, error=str(exc))
                raise JournalError(
                    f"{operation}: the database is unavailable and {exc}; the memory buffer "
                    f"is full ({self.pending} writes wait)"
                ) from exc
            log.error(
                "db_journal_write_failed",
                operation=operation,
                seq=record.seq,
                kept="memory only: lost if the process dies before the replay",
                error=str(exc),
            )
            self._memory.append(record)
            self._volatile.add(record.seq)
            self._buffered(operation)
            return
        if self._spill_offset is None and len(self._memory) < self._buffer_size:
            self._memory.append(record)
        else:
            if self._spill_offset is None:
                self._spill_offset = offset
                log.warning("db_buffer_memory_full", size=self._buffer_size)
            self._spilled += 1
        self._buffered(operation)

    def _buffered(self, operation: str) -> None:
        if self._metrics is not None:
            self._metrics.buffered.labels(operation).inc()
        self._report()

    # reads and other calls that need the database -----------------------------------------

    async def _direct(self, operation: str, call: Callable[[], Awaitable[_R]]) -> _R:
        if self.pending:
            self._kick()
            raise StorageUnavailable(
                f"{operation}: the database is unavailable; {self.pending} writes wait in "
                f"the write buffer for replay"
            )
        return await call()

    def _kick(self) -> None:
        if time.monotonic() - self._last_attempt >= min(_MIN_WAKE_INTERVAL, self._retry_interval):
            self._wake.set()

    async def get_order(self, client_order_id: str) -> Order | None:
        return await self._direct("get_order", lambda: self._inner.get_order(client_order_id))

    async def get_open_orders(self, symbol: str) -> list[Order]:
        return await self._direct("get_open_orders", lambda: self._inner.get_open_orders(symbol))

    async def last_order_time(self, symbol: str) -> float | None:
        return await self._direct("last_order_time", lambda: self._inner.last_order_time(symbol))

    async def get_trades(self, flt: TradeFilter) -> list[Fill]:
        return await self._direct("get_trades", lambda: self._inner.get_trades(flt))

    async def get_round_trips(self, symbol: str) -> list[RoundTrip]:
        return await self._direct("get_round_trips", lambda: self._inner.get_round_trips(symbol))

    async def init_grid(
        self, symbol: str, anchor: Decimal, shape: GridShape | None = None
    ) -> GridState:
        return await self._direct("init_grid", lambda: self._inner.init_grid(symbol, anchor, shape))

    async def load_grid(self, symbol: str) -> GridState | None:
        return await self._direct("load_grid", lambda: self._inner.load_grid(symbol))

    async def known_trade_ids(self, symbol: str, trade_ids: Sequence[str]) -> set[str]:
        return await self._direct(
            "known_trade_ids", lambda: self._inner.known_trade_ids(symbol, trade_ids)
        )

    async def unapplied_order_ids(self, symbol: str) -> list[str]:
        return await self._direct(
            "unapplied_order_ids", lambda: self._inner.unapplied_order_ids(symbol)
        )

    async def save_last_price(self, symbol: str, price: Decimal, ts: float) -> None:
        await self._direct(
            "save_last_price", lambda: self._inner.save_last_price(symbol, price, ts)
        )

    async def summaries(self) -> list[SymbolSummary]:
        return await self._direct("summaries", self._inner.summaries)

    # replay -------------------------------------------------------------------------------

    async def _replay_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._retry_interval):
                    await self._wake.wait()
            self._wake.clear()
            if not self.pending:
                continue
            try:
                await self.flush()
            except JournalError as exc:  # the dead-letter file refused: the batch waits
                log.error("db_replay_postponed", pending=self.pending, error=str(exc))
            except StorageUnavailable as exc:
                log.info("db_replay_postponed", pending=self.pending, error=str(exc))
            except Exception:  # the replayer must outlive any one bad round
                log.exception("db_replay_failed", pending=self.pending)

    async def flush(self) -> int:
        """Replay every buffered write now, in order; return how many were replayed.

        Raises ``StorageUnavailable`` (keeping the rest buffered) when the database is
        still unreachable.
        """
        replayed = 0
        async with self._replay_lock:
            self._last_attempt = time.monotonic()
            started = time.perf_counter()
            while batch := await self._next_batch():
                self._dead_batch = []
                await self._replay(batch)
                await self._write_dead_letters()
                async with self._write_lock:
                    await self._done(batch)
                replayed += len(batch)
        if replayed:
            log.info(
                "db_buffer_replayed",
                records=replayed,
                seconds=round(time.perf_counter() - started, 3),
                pending=self.pending,
            )
        return replayed

    async def _done(self, batch: list[Record]) -> None:
        """Take the replayed ``batch`` off the buffer. Runs under the write lock.

        ``pending`` is what callers (readiness, shutdown, tests) watch for "drained", so it
        must not read 0 before the rest of the bookkeeping is done: the journal is emptied
        first (the one await), then the records leave the queue and the metrics move in one
        step with no await between. A cancellation during the emptying leaves the batch
        buffered; replaying it again changes nothing.
        """
        if self.pending == len(batch):  # the batch is all that is left
            await asyncio.to_thread(self._journal.clear)
        for _ in batch:
            self._volatile.discard(self._memory.popleft().seq)
        if self._metrics is not None:
            self._metrics.replayed.inc(len(batch))
        self._report()

    async def _next_batch(self) -> list[Record]:
        """The oldest buffered records, up to ``BATCH_ROWS`` rows (refilled from the
        journal when the memory queue ran empty)."""
        if not self._memory and self._spill_offset is not None:
            async with self._write_lock:
                offset = self._spill_offset
                chunk = await asyncio.to_thread(self._journal.read, offset, self._buffer_size)
                self._memory.extend(chunk.records)
                if chunk.at_end:
                    self._spill_offset, self._spilled = None, 0
                else:
                    self._spill_offset = chunk.next_offset
                    self._spilled = max(self._spilled - len(chunk.records), 1)
        batch: list[Record] = []
        rows = 0
        for record in self._memory:
            if batch and rows + record.size > BATCH_ROWS:
                break
            batch.append(record)
            rows += record.size
        return batch

    async def _replay(self, batch: list[Record]) -> None:
        """Apply ``batch`` group by group. ``StorageRejected`` (the data itself is refused)
        dead-letters a record; any other failure leaves the batch buffered, unless the same
        records failed with the same error for ``STUCK_ROUNDS`` rounds and ``STUCK_SECONDS``
        (``_set_aside``)."""
        for group in _groups(batch):
            try:
                await self._apply(group)
            except StorageRejected as exc:
                if len(group) == 1:
                    self._dead_letter(group[0], str(exc))
                    continue
                log.warning("db_replay_batch_refused", records=describe(group), error=str(exc))
                for record in group:  # find the records the database refuses
                    try:
                        await self._apply([record])
                    except StorageRejected as one:
                        self._dead_letter(record, str(one))
            except StorageUnavailable:
                raise
            except StorageError as exc:  # not the data's fault: try again next round
                if self._stuck_on(group[0], str(exc)):
                    await self._set_aside(group, str(exc))
                    continue
                log.error("db_replay_failed", records=describe(group), error=str(exc))
                raise StorageUnavailable(f"replay: {exc}") from exc

    def _stuck_on(self, head: Record, error: str) -> bool:
        """Count a round in which the group starting at ``head`` failed with ``error`` (a
        non-connectivity error: those never count); ``True`` once the same failure lasted
        ``STUCK_ROUNDS`` rounds and ``STUCK_SECONDS``."""
        now = time.monotonic()
        if self._stuck != (head.seq, error):
            self._stuck, self._stuck_rounds, self._stuck_since = (head.seq, error), 0, now
        self._stuck_rounds += 1
        return self._stuck_rounds >= STUCK_ROUNDS and now - self._stuck_since >= STUCK_SECONDS

    async def _set_aside(self, group: list[Record], error: str) -> None:
        """Take records that keep failing for a reason other than their data or the
        connection (a grid the database does not have: restored from an older backup) off
        the head of the buffer, so they stop blocking every write after them.

        One by one: a record that now succeeds is stored. Of a grid write the facts (order
        updates, fills, round trips) are still stored without the grid state when the
        database takes them, as under a stale fence; what is not stored goes to the
        dead-letter file with the error, and an error is logged.
        """
        log.error(
            "db_replay_stuck",
            records=describe(group),
            rounds=self._stuck_rounds,
            error=error,
            dead_letter=str(self.dead_letter_path),
        )
        self._stuck = None
        reason = f"failed {self._stuck_rounds} replay rounds: {error}"
        for record in group:
            try:
                await self._apply([record])
            except StorageUnavailable:
                raise
            except StorageError as exc:
                if await self._store_facts(record):
                    self._dead_letter(
                        record, f"{reason}; its orders, fills and round trips are stored"
                    )
                else:
                    self._dead_letter(record, f"{reason}; stored nothing of it: {exc}")

    async def _store_facts(self, record: Record) -> bool:
        """Store the order updates, fills and round trips of a grid write without its grid
        state (the fills as not applied to their levels); whether that worked."""
        if record.op not in ("execution", "levels") or not (
            record.orders or record.fills or record.round_trips
        ):
            return False
        try:
            await self._inner.record_batch(
                record.symbol, record.orders, record.fills, [], record.round_trips, None
            )
        except StorageUnavailable:
            raise
        except StorageError:
            return False
        return True

    async def _apply(self, group: list[Record]) -> None:
        first = group[0]
        inner = self._inner
        if first.op == "orders":
            await inner.save_orders([o for r in group for o in r.orders])
        elif first.op == "fills":
            await inner.save_fills([f for r in group for f in r.fills])
        elif first.op == "round_trips":
            await inner.save_round_trips([t for r in group for t in r.round_trips])
        elif first.op == "shape":
            assert first.shape is not None  # decode guarantees it for this kind
            if not await inner.set_grid_shape(first.symbol, first.shape, first.fence):
                self._dead_letter(first, "stale fence: a newer grid owner stored its shape")
        else:  # "levels" and "execution" of one symbol and fence
            orders = [o for r in group for o in r.orders]
            fills = [f for r in group for f in r.fills]
            trips = [t for r in group for t in r.round_trips]
            levels = [lv for r in group for lv in r.levels]
            if await inner.record_batch(first.symbol, orders, fills, levels, trips, first.fence):
                return
            # the facts are kept whatever the fence says; only the grid levels are refused.
            # Without a fence the fills are stored as not applied to their levels, so the
            # new owner does not take them for fills whose level it already has.
            await inner.record_batch(first.symbol, orders, fills, [], trips, None)
            log.error(
                "db_replay_fenced",
                symbol=first.symbol,
                fence=first.fence,
                records=len(group),
                dead_letter=str(self.dead_letter_path),
            )
            for record in group:
                if record.levels:
                    self._dead_letter(record, "stale fence: grid levels of an older owner")

    def _dead_letter(self, record: Record, reason: str) -> None:
        """Note ``record`` for the dead-letter file; written once its batch is replayed
        (``_write_dead_letters``), so a batch retried later is not dead-lettered twice."""
        self._dead_batch.append(DeadLetter(reason, record))

    async def _write_dead_letters(self) -> None:
        """Write the batch's dead letters in a thread, one fsync for them all, before the
        batch leaves the journal."""
        entries, self._dead_batch = self._dead_batch, []
        if not entries:
            return
        await asyncio.to_thread(self._dead.add_many, entries)
        for entry in entries:
            assert entry.record is not None
            log.error(
                "db_write_dead_lettered",
                op=entry.record.op,
                seq=entry.record.seq,
                reason=entry.reason,
            )
        if self._metrics is not None:
            self._metrics.dead_lettered.inc(len(entries))

    def _report(self) -> None:
        if self._metrics is None:
            return
        self._metrics.buffer_depth.set(self.pending)
        self._metrics.buffer_memory.set(len(self._memory))
        self._metrics.journal_bytes.set(self._journal.size())


async def _run_to_end(step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` to its end even if the caller is cancelled meanwhile, then honour the
    cancellation. A thread (``to_thread``) cannot be stopped: a journal append the caller
    gave up on still lands in the file, so the memory queue must get the record too."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise asyncio.CancelledError
    task.result()


def _group_key(record: Record) -> tuple[object, ...]:
    if record.op in ("orders", "fills", "round_trips"):
        return (record.op,)
    if record.op == "shape":
        return (record.op, record.seq)  # never merged
    return ("grid", record.symbol, record.fence)  # levels and executions merge


def _groups(batch: list[Record]) -> Iterator[list[Record]]:
    """Consecutive records that can be replayed as one transaction, in order."""
    group: list[Record] = []
    for record in batch:
        if group and _group_key(group[0]) != _group_key(record):
            yield group
            group = []
        group.append(record)
    if group:
        yield group
