"""``Replayer``: moves the write buffer's pending writes back into the database.

It runs at start, every ``retry_interval`` seconds, and early when a read finds writes
waiting (``wake``). It replays in order and in batches:

- runs of the same kind of write are merged into one transaction (fills into one
  multi-row insert, executions of one symbol and fence into one ``record_batch``);
- every write is an idempotent upsert keyed on the records' unique keys, so a batch
  replayed twice (a crash before the journal was emptied) changes nothing;
- a batch that fails for any reason but its data stays buffered for the next round (and
  is logged);
- a write the database refuses for its data (constraint, type, length:
  ``StorageRejected``) goes to the dead-letter file with the reason instead of blocking
  the rest. So does, with its facts stored where possible, a record that failed with the
  same non-connectivity error for ``STUCK_ROUNDS`` rounds and ``STUCK_SECONDS`` (a grid
  the database no longer has).

Dead letters are written in a thread, one fsync per batch, before the batch leaves the
journal.

A grid write replayed under a stale fence (another instance took the grid over
meanwhile) keeps the facts: the order updates, fills and round trips are stored anyway,
a fill is never lost. The grid levels written under the stale fence go to the
dead-letter file and an error is logged. Those fills are stored as not applied to their
levels (``record_batch`` with ``fence=None``): the new owner finds them
(``unapplied_order_ids``) and applies them itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Protocol

import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.domain import Fill, Order
from quantmesh.errors import StorageError, StorageRejected, StorageUnavailable
from quantmesh.grid.state import GridShape, LevelState, RoundTrip
from quantmesh.observability.metrics import DbMetrics
from quantmesh.storage.journal import DeadLetter, DeadLetters, JournalError
from quantmesh.storage.pending import PendingWrites
from quantmesh.storage.records import Record, describe

log = structlog.get_logger(__name__)

BATCH_ROWS: Final = 2000  # rows per replayed transaction
_MIN_WAKE_INTERVAL: Final = 1.0  # reads wake the replayer at most this often (s)
_CLOSE_FLUSH_TIMEOUT: Final = 5.0
# a record failing replay with the same non-connectivity error this many rounds and this
# long is set aside (dead-lettered, its facts stored if possible) instead of blocking the rest
STUCK_ROUNDS: Final = 10
STUCK_SECONDS: Final = 300.0


class ReplayTarget(Protocol):
    """The database writes a replay makes (``SqlRepository`` has them)."""

    async def save_orders(self, orders: Sequence[Order]) -> None: ...

    async def save_fills(self, fills: Sequence[Fill]) -> None: ...

    async def save_round_trips(self, trips: Sequence[RoundTrip]) -> None: ...

    async def set_grid_shape(self, symbol: str, shape: GridShape, fence: int) -> bool: ...

    async def record_batch(
        self,
        symbol: str,
        orders: Sequence[Order],
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int | None,
    ) -> bool: ...


class Replayer:
    """Replays ``pending`` into ``target``, in order and in batches; see the module
    docstring. ``clock`` (monotonic seconds) paces the wake-ups and times stuck records;
    ``on_replayed(count)`` is told of every batch stored."""

    def __init__(
        self,
        target: ReplayTarget,
        pending: PendingWrites,
        dead_letters: DeadLetters,
        *,
        retry_interval: float = 10.0,
        metrics: DbMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_replayed: Callable[[int], None] = lambda _count: None,
    ) -> None:
        self._target = target
        self._on_replayed = on_replayed
        self._pending = pending
        self._dead = dead_letters
        self._retry_interval = retry_interval
        self._metrics = metrics
        self._clock = clock
        self._replay_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_attempt = 0.0
        self._task: asyncio.Task[None] | None = None
        self._dead_batch: list[DeadLetter] = []  # dead letters of the batch being replayed
        self._stuck: tuple[int, str] | None = None  # (seq, error) of a group that keeps failing
        self._stuck_rounds = 0
        self._stuck_since = 0.0

    # lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Replay what a previous run left before anything reads the database, then keep
        replaying in the background."""
        if self._pending.count:
            path = str(self._pending.journal_path)
            log.warning("db_journal_found", pending=self._pending.count, path=path)
            try:
                await self.flush()
            except StorageUnavailable as exc:
                log.warning("db_replay_postponed", pending=self._pending.count, error=str(exc))
        self._task = asyncio.create_task(self._replay_loop(), name="db-replayer")

    async def stop(self) -> None:
        """Stop replaying in the background, then replay what waits one last time, for
        at most ``_CLOSE_FLUSH_TIMEOUT`` seconds; what remains stays in the journal."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if not self._pending.count:
            return
        try:
            async with asyncio.timeout(_CLOSE_FLUSH_TIMEOUT):
                await self.flush()
        except (StorageUnavailable, TimeoutError) as exc:
            log.warning(
                "db_buffer_left_in_journal",
                pending=self._pending.count,
                path=str(self._pending.journal_path),
                error=str(exc) or "timed out",
            )

    def wake(self) -> None:
        """Replay soon (a read found writes waiting), at most every ``_MIN_WAKE_INTERVAL``
        seconds (or ``retry_interval``, if shorter)."""
        interval = min(_MIN_WAKE_INTERVAL, self._retry_interval)
        if self._clock() - self._last_attempt >= interval:
            self._wake.set()

    async def _replay_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._retry_interval):
                    await self._wake.wait()
            self._wake.clear()
            if not self._pending.count:
                continue
            try:
                await self.flush()
            except JournalError as exc:  # the dead-letter file refused: the batch waits
                log.error("db_replay_postponed", pending=self._pending.count, error=str(exc))
            except StorageUnavailable as exc:
                log.info("db_replay_postponed", pending=self._pending.count, error=str(exc))
            except Exception:  # the replayer must outlive any one bad round
                log.exception("db_replay_failed", pending=self._pending.count)

    # replay -------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Replay every pending write now, in order; return how many were replayed.

        Raises ``StorageUnavailable`` (keeping the rest buffered) when the database is
        still unreachable.
        """
        replayed = 0
        async with self._replay_lock:
            self._last_attempt = self._clock()
            started = time.perf_counter()
            while batch := await self._pending.next_batch(BATCH_ROWS):
                self._dead_batch = []
                await self._replay(batch)
                await self._write_dead_letters()
                await self._pending.remove(batch)
                replayed += len(batch)
                self._on_replayed(len(batch))
        if replayed:
            log.info(
                "db_buffer_replayed",
                records=replayed,
                seconds=round(time.perf_counter() - started, 3),
                pending=self._pending.count,
            )
        return replayed

    async def _replay(self, batch: list[Record]) -> None:
        """Apply ``batch`` group by group. ``StorageRejected`` (the data itself is refused)
        dead-letters a record; any other failure leaves the batch buffered, unless the same
        records failed with the same error for ``STUCK_ROUNDS`` rounds and ``STUCK_SECONDS``
        (``_set_aside``)."""
        for group in _groups(batch):
            try:
                await self._apply(group)
            except StorageRejected as exc:
                await self._find_refused(group, exc)
            except StorageUnavailable:
                raise
            except StorageError as exc:  # not the data's fault: try again next round
                if self._stuck_on(group[0], str(exc)):
                    await self._set_aside(group, str(exc))
                    continue
                log.error("db_replay_failed", records=describe(group), error=str(exc))
                raise StorageUnavailable(f"replay: {exc}") from exc

    async def _find_refused(self, group: list[Record], error: StorageRejected) -> None:
        """Dead-letter the records of ``group`` the database refuses for their data, and
        store the others."""
        if len(group) == 1:
            self._dead_letter(group[0], str(error))
            return
        log.warning("db_replay_batch_refused", records=describe(group), error=str(error))
        for record in group:
            try:
                await self._apply([record])
            except StorageRejected as refused:
                self._dead_letter(record, str(refused))

    def _stuck_on(self, head: Record, error: str) -> bool:
        """Count a round in which the group starting at ``head`` failed with ``error`` (a
        non-connectivity error: those never count); ``True`` once the same failure lasted
        ``STUCK_ROUNDS`` rounds and ``STUCK_SECONDS``."""
        now = self._clock()
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
            dead_letter=str(self._dead.path),
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
            await self._target.record_batch(
                record.symbol, record.orders, record.fills, [], record.round_trips, None
            )
        except StorageUnavailable:
            raise
        except StorageError:
            return False
        return True

    async def _apply(self, group: list[Record]) -> None:
        """Write ``group`` (records of one kind, see ``_group_key``) in one transaction."""
        first = group[0]
        target = self._target
        if first.op == "orders":
            await target.save_orders([o for r in group for o in r.orders])
        elif first.op == "fills":
            await target.save_fills([f for r in group for f in r.fills])
        elif first.op == "round_trips":
            await target.save_round_trips([t for r in group for t in r.round_trips])
        elif first.op == "shape":
            assert first.shape is not None  # decode guarantees it for this kind
            if not await target.set_grid_shape(first.symbol, first.shape, first.fence):
                self._dead_letter(first, "stale fence: a newer grid owner stored its shape")
        else:  # "levels" and "execution" of one symbol and fence
            await self._apply_grid(group)

    async def _apply_grid(self, group: list[Record]) -> None:
        """Write grid records of one symbol and fence; under a stale fence, their facts
        without the levels (see the module docstring)."""
        first = group[0]
        orders = [o for r in group for o in r.orders]
        fills = [f for r in group for f in r.fills]
        trips = [t for r in group for t in r.round_trips]
        levels = [lv for r in group for lv in r.levels]
        target = self._target
        if await target.record_batch(first.symbol, orders, fills, levels, trips, first.fence):
            return
        # the facts are kept whatever the fence says; only the grid levels are refused.
        # Without a fence the fills are stored as not applied to their levels, so the
        # new owner does not take them for fills whose level it already has.
        await target.record_batch(first.symbol, orders, fills, [], trips, None)
        log.error(
            "db_replay_fenced",
            symbol=first.symbol,
            fence=first.fence,
            records=len(group),
            dead_letter=str(self._dead.path),
        )
        for record in group:
            if record.levels:
                self._dead_letter(record, "stale fence: grid levels of an older owner")

    # dead letters -------------------------------------------------------------------------

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
