"""``BufferedRepository``: the ``Repository`` that keeps every write through a database outage.

It wraps a ``SqlRepository``; while nothing is buffered, every call goes straight to the
database. A write that fails for any reason but its data (connectivity, a read-only or
full server, a timeout: everything but ``StorageRejected``, as in the replay) is buffered:

- it is appended to the pending writes (``PendingWrites``: the journal, fsynced, and a
  bounded memory queue) before the caller continues;
- a journal that cannot take it (disk full, EIO) leaves it in memory only, loudly;
- a writer cancelled meanwhile still leaves it buffered.

From then on every write is buffered the same way, in arrival order, until the
``Replayer`` (``replay``) has drained them, so the database sees the writes in the order
they were made.

What each call does while writes are buffered:

- ``save_order(s)``, ``save_fill(s)``, ``save_round_trip``: buffered, return ``None``.
- ``record_execution``, ``record_batch``, ``save_levels``, ``set_grid_shape``: buffered,
  return ``True``.
  These compare-and-set the grid's fence, which cannot be checked without the database;
  the caller holds the symbol's lease and trades on from memory. On replay, a stale fence
  (another instance took the grid over meanwhile) keeps the facts and dead-letters the
  grid levels (see ``replay``).
- reads, ``init_grid`` and ``save_last_price``: raise ``StorageUnavailable`` naming how
  many writes wait, and wake the replayer; a read answered from the database alone would
  miss them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import structlog

from quantmesh.domain import Fill, Order
from quantmesh.errors import StorageError, StorageRejected, StorageUnavailable
from quantmesh.grid.state import GridShape, GridState, LevelState, RoundTrip
from quantmesh.notify.events import NOP, Notifier, db_outage_began, db_outage_ended
from quantmesh.observability.metrics import DbMetrics
from quantmesh.secrets import mask_credentials
from quantmesh.storage.base import DurabilityReport, ExecutionBatch, SymbolSummary, TradeFilter
from quantmesh.storage.journal import DeadLetters, Journal, dead_letter_path
from quantmesh.storage.pending import PendingWrites
from quantmesh.storage.records import Record
from quantmesh.storage.replay import Replayer
from quantmesh.storage.repository import SqlRepository

log = structlog.get_logger(__name__)
_Result = TypeVar("_Result")


@dataclass(slots=True)
class _Outage:
    """Writes buffered since the database went away, and how many were replayed."""

    began: float
    buffered: int = 0
    replayed: int = 0


class BufferedRepository:
    """A ``Repository`` that buffers writes through outages; see the module docstring.

    It owns the pending writes and the ``Replayer`` that moves them into the database.
    """

    def __init__(
        self,
        inner: SqlRepository,
        journal_path: Path,
        *,
        buffer_size: int = 10000,
        retry_interval: float = 10.0,
        metrics: DbMetrics | None = None,
        notifier: Notifier = NOP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._notifier = notifier
        self._clock = clock
        self._outage: _Outage | None = None  # since the first write buffered, until drained
        self._drained = asyncio.Event()  # set while no buffered write waits for replay
        self._drained.set()
        dead_letters = DeadLetters(dead_letter_path(journal_path))
        self._pending = PendingWrites(
            Journal(journal_path, dead_letters), capacity=buffer_size, metrics=metrics
        )
        self._replayer = Replayer(
            inner,
            self._pending,
            dead_letters,
            retry_interval=retry_interval,
            metrics=metrics,
            on_replayed=self._replayed,
        )
        self._dead_letter_path = dead_letters.path
        self._seq = 0

    @property
    def exchange(self) -> str:
        return self._inner.exchange

    @property
    def inner(self) -> SqlRepository:
        return self._inner

    @property
    def pending(self) -> int:
        """Buffered writes not yet in the database."""
        return self._pending.count

    @property
    def memory_records(self) -> int:
        return self._pending.in_memory

    @property
    def volatile(self) -> int:
        """Buffered writes held in memory only (the journal refused them): a crash now would
        lose them, so the trader places nothing new until they are stored."""
        return self._pending.volatile

    @property
    def journal_path(self) -> Path:
        return self._pending.journal_path

    @property
    def dead_letter_path(self) -> Path:
        return self._dead_letter_path

    def durability(self) -> DurabilityReport:
        """What the write buffer holds now."""
        return DurabilityReport(
            pending=self._pending.count,
            in_memory=self._pending.in_memory,
            volatile=self._pending.volatile,
            capacity=self._pending.capacity,
        )

    # lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the database (``StartupError`` if unusable), then replay the journal a
        previous run left before anything reads the database."""
        await self._inner.start()
        self._seq = await self._pending.open()
        if self._pending.count:
            self._drained.clear()
        await self._replayer.start()

    async def close(self) -> None:
        """Stop the replayer (after a last replay, bounded in time), then close the journal
        and the database."""
        await self._replayer.stop()
        self._pending.close()
        await self._inner.close()

    async def flush(self) -> int:
        """Replay every buffered write now, in order; return how many were replayed.

        Raises ``StorageUnavailable`` (keeping the rest buffered) when the database is
        still unreachable.
        """
        return await self._replayer.flush()

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
        return await self.record_batch(
            order.symbol, [order], fills, levels, round_trips, fence, operation="record_execution"
        )

    async def record_batch(
        self,
        symbol: str,
        orders: Sequence[Order],
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int,
        *,
        operation: str = "record_batch",
    ) -> bool:
        batch = ExecutionBatch(
            symbol, tuple(orders), tuple(fills), tuple(levels), tuple(round_trips), fence
        )
        return await self._write(
            operation,
            _execution(batch),
            lambda: self._inner.record_batch(
                symbol,
                batch.orders,
                batch.fills,
                batch.levels,
                batch.round_trips,
                fence,
                operation=operation,
            ),
            True,
        )

    async def record_batches(self, batches: Sequence[ExecutionBatch]) -> list[bool]:
        """One transaction while nothing is buffered; else a buffered write per batch, in
        order (each ``True``)."""
        given = tuple(batches)
        return await self._write_all(
            "record_batches",
            [_execution(batch) for batch in given],
            lambda: self._inner.record_batches(given),
            [True] * len(given),
        )

    async def _write(
        self,
        operation: str,
        record: Callable[[int], Record],
        direct: Callable[[], Awaitable[_Result]],
        buffered: _Result,
    ) -> _Result:
        return await self._write_all(operation, [record], direct, buffered)

    async def _write_all(
        self,
        operation: str,
        records: Sequence[Callable[[int], Record]],
        direct: Callable[[], Awaitable[_Result]],
        buffered: _Result,
    ) -> _Result:
        """``direct()`` while nothing is buffered; else (or when it fails for anything but
        its data) ``records``, numbered in order, appended to the pending writes."""
        async with self._pending.lock:
            error = "writes of an earlier run wait for replay"
            if not self._pending.count:
                try:
                    return await direct()
                except StorageRejected:
                    raise  # the data itself: buffering it would only block the writes after it
                except StorageUnavailable as exc:
                    log.warning("db_unavailable_buffering", operation=operation, error=str(exc))
                    error = str(exc)
                except StorageError as exc:  # as the replay does: the data is not at fault
                    log.error("db_write_failed_buffering", operation=operation, error=str(exc))
                    error = str(exc)
            if self._outage is None:
                self._outage = _Outage(self._clock())
                self._notifier.emit(db_outage_began(operation, mask_credentials(error)))
            self._outage.buffered += len(records)
            self._drained.clear()
            await _run_to_end(self._append(operation, records))
            return buffered

    async def _append(self, operation: str, records: Sequence[Callable[[int], Record]]) -> None:
        for record in records:
            self._seq += 1
            await self._pending.append(operation, record(self._seq))

    def _replayed(self, count: int) -> None:
        """The replayer stored ``count`` buffered writes; once none wait, the outage is over."""
        if not self._pending.count:
            self._drained.set()
        outage = self._outage
        if outage is None:
            return
        outage.replayed += count
        if not self._pending.count:
            self._outage = None
            lasted = self._clock() - outage.began
            self._notifier.emit(db_outage_ended(outage.buffered, outage.replayed, lasted))

    async def replayed(self) -> bool:
        """``False`` at once when no buffered write waits for replay; else ``True`` once the
        replayer has stored the last of them (the reads refused meanwhile, see
        ``_direct``, can go again)."""
        if not self._pending.count:
            return False
        await self._drained.wait()
        return True

    # reads and other calls that need the database -----------------------------------------

    async def _direct(self, operation: str, call: Callable[[], Awaitable[_Result]]) -> _Result:
        if self._pending.count:
            self._replayer.wake()
            raise StorageUnavailable(
                f"{operation}: the database is unavailable; {self._pending.count} writes "
                f"wait in the write buffer for replay"
            )
        return await call()

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


def _execution(batch: ExecutionBatch) -> Callable[[int], Record]:
    """The buffered record of ``batch``, given its sequence number."""
    return lambda seq: Record(
        seq,
        "execution",
        symbol=batch.symbol,
        orders=batch.orders,
        fills=batch.fills,
        levels=batch.levels,
        round_trips=batch.round_trips,
        fence=batch.fence,
    )


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
