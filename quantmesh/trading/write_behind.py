"""``WriteBehind``: one trader's order and fill records, stored in order behind its back.

The trader applies an exchange's answer (an order accepted, cancelled, filled) to its book
in memory and goes on to the next order; the record of it is queued here and a drain task
stores what is queued in one transaction per run of writes (``record_batch``), oldest
first; given a ``GroupCommit``, that transaction may hold other symbols' runs too. The
database write is off the path between a fill and the next order.

Why that is safe (the crash ordering; the README argues it for users):

- the database always holds a prefix of the trader's writes, in the order they were made:
  the drain stores the queue head first and a batch the database cannot take goes to the
  write buffer's journal (``BufferedRepository``), after which everything goes there, in
  order;
- a crash (kill -9) loses at most the queued tail. What it held is on the exchange: the
  next owner's reconciliation, before it plans anything, adopts our open orders, settles
  the recorded-open orders that closed (with their fills) and applies the orders placed
  since the latest recorded one that filled meanwhile, all in the order the exchange
  created them. A level whose buy filled is known as held before any order is planned,
  and client order ids are derived from level and cycle, so no order is placed twice and
  no fill is lost;
- every read goes through ``flush`` first, so the trader and its reconciler read their own
  writes; a symbol is released only after its queue is drained (``close``).

Grid writes refused for a stale fence (another instance owns the grid now) keep their
facts: every queued order, fill and round trip is stored without the levels. The trader is
told at once (``on_failure``: it stops placing) and ``watch`` raises ``LockLost``. Any other
failure of the drain (``StorageRejected``, or a database error with no write buffer) stops
the trader the same way, with that error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import structlog

from quantmesh import failpoints
from quantmesh.domain import Fill, Order
from quantmesh.errors import LockLost
from quantmesh.grid.state import GridShape, GridState, LevelState, RoundTrip
from quantmesh.storage.base import (
    DurabilityReport,
    ExecutionBatch,
    Repository,
    SymbolSummary,
    TradeFilter,
)
from quantmesh.storage.group_commit import GroupCommit

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 1000  # queued writes beyond which a writer waits for the drain (back pressure)
BATCH_LIMIT = 500  # writes per transaction
GATHER_DELAY = 0.002  # seconds between the first queued write and its transaction


@dataclass(frozen=True, slots=True)
class _Write:
    orders: tuple[Order, ...]
    fills: tuple[Fill, ...] = ()
    levels: tuple[LevelState, ...] = ()
    round_trips: tuple[RoundTrip, ...] = ()
    fence: int = 0


class WriteBehind:
    """A ``Repository`` for one trader whose order and execution records are stored behind
    its back, in order (see the module docstring); every other call waits for them first."""

    def __init__(
        self,
        inner: Repository,
        symbol: str,
        *,
        fence: Callable[[], int],
        on_failure: Callable[[], None] = lambda: None,
        queued: Callable[[int], None] = lambda _: None,
        limit: int = QUEUE_LIMIT,
        group: GroupCommit | None = None,
    ) -> None:
        self._inner = inner
        # the queue head goes to the group's transaction, shared with other symbols
        self._batches: Repository | GroupCommit = inner if group is None else group
        self._symbol = symbol
        self._fence = fence
        self._on_failure = on_failure
        self._report = queued  # told the queue's length when it changes
        self._limit = limit
        self._queue: list[_Write] = []
        self._drain: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()

    @property
    def queued(self) -> int:
        """Writes not yet stored (the one being stored included)."""
        return len(self._queue)

    # the queued writes --------------------------------------------------------------------

    async def save_orders(self, orders: Sequence[Order]) -> None:
        if orders:
            await self._submit(_Write(tuple(orders), fence=self._fence()))

    async def save_order(self, order: Order) -> None:
        await self.save_orders([order])

    async def record_execution(
        self,
        order: Order,
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int,
    ) -> bool:
        """Queue the execution; ``True`` at once. A stale fence is reported later, through
        ``on_failure`` and ``watch``."""
        await self._submit(_Write((order,), tuple(fills), tuple(levels), tuple(round_trips), fence))
        return True

    async def _submit(self, write: _Write) -> None:
        self._raise_failure()
        self._queue.append(write)
        self._report(len(self._queue))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_queue(), name=f"writes:{self._symbol}")
        if len(self._queue) > self._limit:
            await self.flush()  # the database falls behind: the trader waits for it

    async def _drain_queue(self) -> None:
        # Let the trader act on what it just learnt first: the database thread would take
        # the interpreter's lock from the order being sent. Writes arriving meanwhile join
        # the same transaction.
        try:
            await asyncio.sleep(GATHER_DELAY)
            while self._queue and self._failure is None:
                batch = _head(self._queue)
                if not await self._store(batch):
                    await self._refused(batch[0].fence)
                    return
                self._taken(batch)
        except BaseException as exc:
            self._fail(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _store(self, batch: list[_Write]) -> bool:
        """Store ``batch`` in one transaction; ``False`` (nothing stored) on a stale fence."""
        fills = [f for w in batch for f in w.fills]
        stored = await self._batches.record_batch(
            self._symbol,
            [o for w in batch for o in w.orders],
            fills,
            [lv for w in batch for lv in w.levels],
            [t for w in batch for t in w.round_trips],
            batch[0].fence,
        )
        if stored and fills:
            failpoints.reach("fills_stored")
        return stored

    async def _refused(self, fence: int) -> None:
        """A newer owner holds the grid: stop placing at once, keep the facts of everything
        queued (fills stored alone are not applied to their levels: the new owner applies
        them), drop the levels, and end the trader."""
        self._on_failure()
        log.error("grid_write_refused", fence=fence, queued=len(self._queue))
        inner = self._inner
        while self._queue:
            batch = self._queue[:BATCH_LIMIT]
            await inner.save_orders([o for w in batch for o in w.orders])
            await inner.save_fills([f for w in batch for f in w.fills])
            for trip in (t for w in batch for t in w.round_trips):
                await inner.save_round_trip(trip)
            self._taken(batch)
        self._fail(LockLost(f"grid:{self._symbol}"))

    def _taken(self, batch: list[_Write]) -> None:
        del self._queue[: len(batch)]
        self._report(len(self._queue))

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        self._failed.set()
        self._on_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            if isinstance(self._failure, asyncio.CancelledError):
                raise LockLost(f"grid:{self._symbol}: its writes were interrupted")
            raise self._failure

    async def flush(self) -> None:
        """Wait until every queued write is stored; raise the drain's failure if it failed."""
        while self._drain is not None and not self._drain.done():
            await asyncio.shield(self._drain)
        self._raise_failure()

    async def watch(self) -> None:
        """Raise the drain's failure when it happens (run it in the trader's task group)."""
        await self._failed.wait()
        self._raise_failure()

    async def close(self) -> None:
        """Wait for the queue to be stored, even if the caller is cancelled meanwhile (the
        symbol must not be released with its records still queued); a failure is logged,
        not raised: ``watch`` has raised it. The repository behind stays open."""
        drain = self._drain
        if drain is None:
            return
        while not drain.done():
            try:
                await asyncio.shield(drain)
            except asyncio.CancelledError:
                if drain.done():
                    raise
                log.warning("writes_drain_on_cancel", queued=len(self._queue))
                await asyncio.wait((drain,))
                raise
            except BaseException:  # noqa: BLE001 - the failure is watch()'s to raise
                break
        if self._queue:
            log.error("writes_not_stored", queued=len(self._queue), error=str(self._failure))

    # everything else reads or writes after the queue ------------------------------------

    async def start(self) -> None:
        """Nothing: the repository behind is shared, and started by the service."""

    def durability(self) -> DurabilityReport | None:
        return self._inner.durability()

    async def replayed(self) -> bool:
        return await self._inner.replayed()

    async def get_order(self, client_order_id: str) -> Order | None:
        await self.flush()
        return await self._inner.get_order(client_order_id)

    async def get_open_orders(self, symbol: str) -> list[Order]:
        await self.flush()
        return await self._inner.get_open_orders(symbol)

    async def last_order_time(self, symbol: str) -> float | None:
        await self.flush()
        return await self._inner.last_order_time(symbol)

    async def save_fill(self, fill: Fill) -> None:
        await self.save_fills([fill])

    async def save_fills(self, fills: Sequence[Fill]) -> None:
        await self.flush()
        await self._inner.save_fills(fills)

    async def get_trades(self, flt: TradeFilter) -> list[Fill]:
        await self.flush()
        return await self._inner.get_trades(flt)

    async def save_round_trip(self, trip: RoundTrip) -> None:
        await self.flush()
        await self._inner.save_round_trip(trip)

    async def get_round_trips(self, symbol: str) -> list[RoundTrip]:
        await self.flush()
        return await self._inner.get_round_trips(symbol)

    async def init_grid(
        self, symbol: str, anchor: Decimal, shape: GridShape | None = None
    ) -> GridState:
        await self.flush()
        return await self._inner.init_grid(symbol, anchor, shape)

    async def set_grid_shape(self, symbol: str, shape: GridShape, fence: int) -> bool:
        await self.flush()
        return await self._inner.set_grid_shape(symbol, shape, fence)

    async def load_grid(self, symbol: str) -> GridState | None:
        await self.flush()
        return await self._inner.load_grid(symbol)

    async def save_levels(self, symbol: str, levels: Sequence[LevelState], fence: int) -> bool:
        await self.flush()
        return await self._inner.save_levels(symbol, levels, fence)

    async def record_batch(
        self,
        symbol: str,
        orders: Sequence[Order],
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int,
    ) -> bool:
        await self.flush()
        return await self._inner.record_batch(symbol, orders, fills, levels, round_trips, fence)

    async def record_batches(self, batches: Sequence[ExecutionBatch]) -> list[bool]:
        await self.flush()
        return await self._inner.record_batches(batches)

    async def known_trade_ids(self, symbol: str, trade_ids: Sequence[str]) -> set[str]:
        await self.flush()
        return await self._inner.known_trade_ids(symbol, trade_ids)

    async def unapplied_order_ids(self, symbol: str) -> list[str]:
        await self.flush()
        return await self._inner.unapplied_order_ids(symbol)

    async def save_last_price(self, symbol: str, price: Decimal, ts: float) -> None:
        # informational, a row of its own: it need not wait for the queue
        await self._inner.save_last_price(symbol, price, ts)

    async def summaries(self) -> list[SymbolSummary]:
        await self.flush()
        return await self._inner.summaries()


def _head(queue: list[_Write]) -> list[_Write]:
    """The writes at the head of ``queue`` stored in one transaction: those under the
    first one's fence, at most ``BATCH_LIMIT``."""
    fence = queue[0].fence
    batch: list[_Write] = []
    for write in queue[:BATCH_LIMIT]:
        if write.fence != fence:
            break
        batch.append(write)
    return batch
