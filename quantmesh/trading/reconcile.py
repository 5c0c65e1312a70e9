"""The reconciler: one symbol's orders on the exchange checked against its book and database.

At start it adopts our open orders from the exchange and settles those that closed while
no process followed them; then, every ``interval`` and under the symbol's reconcile lock,
it catches what the order stream missed. It also looks up the orders whose placement
outcome is unknown. What it finds is applied through the trader's ``record`` (an update)
and ``absorb`` (an order, its fills fetched), under the trader's mutex.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import structlog

from quantmesh.cancel import stop_if_cancelling
from quantmesh.domain import Fill, Order, OrderUpdate
from quantmesh.errors import (
    AuthenticationFailed,
    ExchangeError,
    LockError,
    OrderNotFound,
    StorageError,
    StorageUnavailable,
)
from quantmesh.exchange.base import Exchange
from quantmesh.grid.ids import client_order_id
from quantmesh.grid.ledger import sell_progress
from quantmesh.lock.base import DistributedLock
from quantmesh.lock.keys import LockKeys
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.base import Repository, TradeFilter
from quantmesh.trading.book import OrderBook
from quantmesh.trading.sender import OrderSender

log = structlog.get_logger(__name__)

# How far before the latest recorded order reconciliation looks for unrecorded ones (s).
_UNRECORDED_MARGIN = 60.0
# Reconcile rounds an order must be unknown to the exchange before it counts as cancelled.
_MISSING_ROUNDS = 3


class Reconciler:
    """Keeps one symbol's book in step with the exchange: at start, then every round."""

    def __init__(
        self,
        book: OrderBook,
        *,
        exchange: Exchange,
        repository: Repository,
        sender: OrderSender,
        record: Callable[[OrderUpdate], Awaitable[None]],
        absorb: Callable[[Order], Awaitable[None]],
        mutex: asyncio.Lock,
        locker: DistributedLock,
        lock_keys: LockKeys,
        metrics: Metrics,
        interval: float,
        lock_ttl: float,
        placing: Callable[[], bool] = lambda: True,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.symbol = book.spec.symbol
        self._book = book
        self._exchange = exchange
        self._repo = repository
        self._sender = sender
        self._record = record
        self._absorb = absorb
        self._mutex = mutex  # the trader's: everything that changes the grid holds it
        self._locker = locker
        self._keys = lock_keys
        self._metrics = metrics
        self._placing = placing  # false once the trader stops placing: no more rounds
        self._interval = interval
        self._lock_ttl = lock_ttl
        self._wall = wall_clock
        self._missing: dict[str, int] = {}  # open orders the exchange no longer knows

    # at start ----------------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Under the mutex: rebuild the sell progress of held levels, then reconcile."""
        async with self._mutex:
            await self._restore_progress()
            await self._reconcile()

    async def _reconcile(self) -> None:
        """Adopt our open orders from the exchange and settle those closed while we were away.

        Everything found is applied in the order the exchange created it, whatever way it
        was found (unapplied, unrecorded, open, settled): a level's buy must be applied
        before the sell that followed it, or the sell's fills meet a level on the previous
        cycle and the level is sold twice.
        """
        on_exchange = await self._our_open_orders()
        unapplied = await self._unapplied_updates()
        recorded = {o.client_order_id: o for o in await self._repo.get_open_orders(self.symbol)}
        unrecorded = await self._unrecorded_orders(set(recorded))
        gone = recorded.keys() - on_exchange.keys()
        settled = [await self._final_state(cid, recorded[cid]) for cid in sorted(gone)]
        await self._apply_in_order([*unapplied, *unrecorded, *on_exchange.values(), *settled])
        log.info(
            "reconciled",
            adopted=len(on_exchange),
            settled=len(gone),
            unrecorded=len(unrecorded),
            unapplied=len(unapplied),
        )

    async def _our_open_orders(self) -> dict[str, Order]:
        """The exchange's open orders of this grid, by client order id."""
        return {
            o.client_order_id: o
            for o in await self._exchange.fetch_open_orders(self.symbol)
            if self._book.is_ours(o.client_order_id)
        }

    async def _apply_in_order(self, found: Sequence[Order | OrderUpdate]) -> None:
        """Absorb orders (their fills read from the exchange) and apply stored updates,
        oldest order first."""

        def created(item: Order | OrderUpdate) -> float:
            return (item.order if isinstance(item, OrderUpdate) else item).created_at

        for item in sorted(found, key=created):
            if isinstance(item, OrderUpdate):
                await self._record(item)
            else:
                await self._absorb(item)

    async def _unapplied_updates(self) -> list[Order | OrderUpdate]:
        """The orders whose fills are stored without their level: the facts a former owner's
        buffered writes stored after this owner took the grid (its level writes refused).

        A level's state follows from the facts, however they reached the database: a buy
        that filled is never placed again because its level was not updated. Each order is
        read again from the exchange, so its fills are complete; an order the exchange no
        longer shows comes with what is stored.
        """
        book = self._book
        cids = [c for c in await self._repo.unapplied_order_ids(self.symbol) if book.is_ours(c)]
        found: list[Order | OrderUpdate] = []
        for cid in cids:
            log.warning(
                "unapplied_fills_found",
                client_order_id=cid,
                detail="stored by a former owner without its grid level: applying them",
            )
            try:
                found.append(await self._exchange.fetch_order(self.symbol, cid))
            except OrderNotFound:
                stored = await self._repo.get_order(cid)
                if stored is None:
                    continue
                fills = await self._repo.get_trades(
                    TradeFilter(symbol=self.symbol, client_order_id=cid)
                )
                found.append(OrderUpdate(stored, tuple(fills)))
        return found

    async def _unrecorded_orders(self, recorded_open: set[str]) -> list[Order]:
        """Our closed orders the database does not know: placed just before a crash.

        An order is recorded right after the exchange accepted it; a crash in between leaves
        an order only the exchange knows, and it may have filled since. Every order placed
        since shortly before the latest recorded one is compared with the database.
        """
        last = await self._repo.last_order_time(self.symbol)
        since = (last or 0.0) - _UNRECORDED_MARGIN
        found = []
        for order in await self._exchange.fetch_orders_since(self.symbol, since):
            cid = order.client_order_id
            # Open orders are adopted anyway; a closed one without fills changed nothing.
            if order.is_open or order.filled == 0 or cid in recorded_open:
                continue
            if not self._book.is_ours(cid):
                continue
            stored = await self._repo.get_order(cid)
            if stored is not None and (
                stored.exchange_order_id == order.exchange_order_id
                or stored.created_at > order.created_at  # an earlier order with a reused id
            ):
                continue
            log.warning("unrecorded_order_found", client_order_id=cid, status=order.status)
            found.append(order)
        return sorted(found, key=lambda o: o.created_at)

    async def _restore_progress(self) -> None:
        """Rebuild partial-sale progress of held levels from the stored sell fills whose
        effect on the level was stored with them (the others are applied afterwards, by
        ``_unapplied_updates``, and counted then)."""
        book = self._book
        sold: dict[int, list[Fill]] = {}
        for level in book.holding_levels():
            cid = client_order_id(book.tag, level.index, "sell", level.cycle)
            fills = await self._repo.get_trades(
                TradeFilter(symbol=self.symbol, client_order_id=cid)
            )
            if fills:
                sold[level.index] = fills
        if not sold:
            return
        every = [f.trade_id for fills in sold.values() for f in fills]
        applied = await self._repo.known_trade_ids(self.symbol, every)  # one query for all
        for index, fills in sold.items():
            fills = [f for f in fills if f.trade_id in applied]
            if fills:
                book.set_progress(index, sell_progress(fills, book.rules))

    # every round -------------------------------------------------------------------------

    async def run(self) -> None:
        """Check our open orders against the exchange every ``interval``.

        The order stream can miss an event (a dropped connection, an exchange hiccup);
        this catches it. A failed round is logged and the next one tries again.
        """
        while True:
            await asyncio.sleep(self._interval)
            if not self._placing():
                continue
            try:
                await self.resync()
            except AuthenticationFailed:
                raise
            except (ExchangeError, StorageError, LockError) as exc:
                self._metrics.exchange_errors.labels(self.symbol, "reconcile").inc()
                log.warning("reconcile_failed", error=str(exc))
            # a cancellation swallowed in the round (a client's wait_for, or the lock's
            # watchdog taking it for its own): the trader's task group asks only once
            stop_if_cancelling()

    async def resync(self) -> None:
        """One round, under the symbol's reconcile lock: adopt our open orders the book
        lacks, and settle those the book holds open that the exchange no longer lists.

        Foreign orders are never touched. Without the lock (another holder reconciles, or
        the lock backend is down) the round is skipped.
        """
        lease = await self._locker.try_lock(self._keys.reconcile_key(self.symbol), self._lock_ttl)
        if lease is None:
            log.debug("reconcile_skipped", reason="reconcile lock held elsewhere")
            return
        try:
            async with self._mutex:
                adopted, settled = await self._resync_orders()
        finally:
            try:
                await self._locker.unlock(lease)
            except LockError as exc:  # the lease's TTL frees it
                log.warning("lock_release_failed", key=lease.key, error=str(exc))
        if adopted or settled:
            log.info("resynced", adopted=adopted, settled=settled)

    async def _resync_orders(self) -> tuple[int, int]:
        book = self._book
        on_exchange = await self._our_open_orders()
        found: list[Order | OrderUpdate] = []
        try:
            found.extend(await self._unapplied_updates())
        except StorageUnavailable as exc:  # the facts wait for the database; the rest goes on
            log.warning("unapplied_fills_check_postponed", error=str(exc))
        tracked = {o.client_order_id for o in book.open_orders()}
        self._missing = {cid: n for cid, n in self._missing.items() if cid in tracked}
        unknown = set(book.unknown_ids())
        adopted = [on_exchange[cid] for cid in on_exchange.keys() - tracked]
        found.extend(adopted)
        gone = sorted(tracked - on_exchange.keys() - unknown)  # unknown: looked up anyway
        for cid in gone:
            try:
                found.append(await self._exchange.fetch_order(self.symbol, cid))
            except OrderNotFound:
                await self._missing_on_exchange(cid)
                continue
            self._missing.pop(cid, None)
        await self._apply_in_order(found)
        return len(adopted), len(gone)

    async def _missing_on_exchange(self, cid: str) -> None:
        """An order we hold open that the exchange neither lists nor finds (exchanges purge
        orders cancelled without fills): after ``_MISSING_ROUNDS`` rounds it is settled as
        cancelled, as at start, so its level does not stay blocked forever."""
        misses = self._missing.get(cid, 0) + 1
        self._missing[cid] = misses
        log.warning("order_missing_on_exchange", client_order_id=cid, rounds=misses)
        if misses < _MISSING_ROUNDS:
            return
        recorded = await self._repo.get_order(cid)
        if recorded is None:
            return
        del self._missing[cid]
        await self._settle(cid, recorded)

    async def _settle(self, cid: str, recorded: Order) -> None:
        """Find out what happened to an order we thought open and record it."""
        await self._absorb(await self._final_state(cid, recorded))

    async def _final_state(self, cid: str, recorded: Order) -> Order:
        """What became of an order we thought open; cancelled if the exchange forgot it."""
        try:
            return await self._exchange.fetch_order(self.symbol, cid)
        except OrderNotFound:
            log.warning("order_missing_on_exchange", client_order_id=cid)
            return replace(recorded, status="canceled", updated_at=self._wall())

    # orders of unknown outcome -----------------------------------------------------------

    async def resolve_unknown(self) -> None:
        """Look up orders whose placement outcome was unknown; the caller holds the mutex."""
        for cid in self._book.unknown_ids():
            order = await self._sender.lookup(self._book, cid)
            if order is not None:
                log.info("order_found_after_error", client_order_id=cid, status=order.status)
                await self._absorb(order)
