"""The recorder: one symbol's order updates applied to its grid, and stored.

What the exchange says of an order - a call's answer, an update from the order stream, an
order the reconciler found - is applied to the book here and queued for the database
(the trader's ``WriteBehind``): fills fetched where a call's answer has none, fills an
earlier process may have applied checked against the database, a buy of a finished
cycle cancelled rather than adopted, and every fill and round trip counted and logged.
The trader calls it under its mutex.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import structlog

from quantmesh import failpoints
from quantmesh.domain import Fill, Order, OrderRequest, OrderUpdate, fills_cover
from quantmesh.errors import AuthenticationFailed, ExchangeError, StorageUnavailable
from quantmesh.exchange.base import Exchange
from quantmesh.grid.ids import parse_client_order_id
from quantmesh.grid.planner import CancelOrder
from quantmesh.notify.events import NOP, Notifier, round_trip
from quantmesh.observability.metrics import Metrics
from quantmesh.trading.book import Effect, OrderBook
from quantmesh.trading.sender import OrderSender
from quantmesh.trading.write_behind import WriteBehind

log = structlog.get_logger(__name__)


class Recorder:
    """Applies one symbol's order updates to its book and queues their records."""

    def __init__(
        self,
        symbol: str,
        *,
        exchange: Exchange,
        writes: WriteBehind,
        sender: OrderSender,
        metrics: Metrics,
        fence: Callable[[], int],
        notifier: Notifier = NOP,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.symbol = symbol
        self._exchange = exchange
        self._repo = writes
        self._sender = sender
        self._metrics = metrics
        self._fence = fence
        self._notifier = notifier
        self._wall = wall_clock

    async def record_answers(self, book: OrderBook, orders: list[Order]) -> None:
        """Store the answers of one step: unfilled orders in one batch, the rest one by one.

        An order without fills changes no level (a placement, or a cancel before any fill),
        so only its status is stored.
        """
        now = self._wall()
        plain: list[tuple[Order, Effect]] = []
        rest: list[Order] = []
        for order in orders:
            effect = book.effect(OrderUpdate(order), now) if order.filled == 0 else None
            if effect is None:
                rest.append(order)
            elif effect.level == book.state.level(effect.level.index) and not effect.round_trips:
                plain.append((order, effect))
            else:
                rest.append(order)
        if plain:
            await self._repo.save_orders([order for order, _ in plain])
            for _, effect in plain:
                book.commit(effect)
            self._metrics.open_orders.labels(self.symbol).set(len(book.open_orders()))
        for order in rest:
            await self.absorb(book, order)

    async def absorb(self, book: OrderBook, order: Order) -> None:
        """Record an order state returned by a call, with its fills.

        A call's answer carries no fills, and the stream may deliver them only later: an
        order that filled (at once, or before a cancel) is recorded together with its fills,
        so the level never looks free while its fills are still on their way. If the fills
        cannot be fetched, the order stays "unknown" and its level blocked until a lookup
        succeeds.
        """
        fills: tuple[Fill, ...] = ()
        if order.filled > 0:
            try:
                fills = tuple(
                    await self._exchange.fetch_order_fills(self.symbol, order.client_order_id)
                )
            except AuthenticationFailed:
                raise
            except ExchangeError as exc:
                self._metrics.exchange_errors.labels(self.symbol, type(exc).__name__).inc()
                log.warning(
                    "fills_lookup_failed", client_order_id=order.client_order_id, error=str(exc)
                )
                book.track_unknown(_request_of(order))
                return
            if not fills_cover(order, fills):
                # Filled per the order, but its trades are not all listed yet: record
                # nothing now (the level stays blocked) and look the order up again.
                log.warning(
                    "fills_incomplete",
                    client_order_id=order.client_order_id,
                    filled=str(order.filled),
                    listed=str(sum((f.amount for f in fills), Decimal(0))),
                )
                book.track_unknown(_request_of(order))
                return
        await self.record(book, OrderUpdate(order, fills))

    async def record(self, book: OrderBook, update: OrderUpdate) -> None:
        """Apply an order update to the grid and store it; the mutex is held."""
        fills = update.fills
        if not fills and book.is_stale(update.order):
            await self._cancel_stale(book, update.order)
            return
        placed_here = self._sender.created_here(update.order)  # no earlier process saw it
        if fills and not placed_here and not book.tracks(update.order):
            # Fills of an order this process did not follow from its placement (adopted,
            # settled after a restart) may have been applied by an earlier process.
            try:
                known = await self._repo.known_trade_ids(self.symbol, [f.trade_id for f in fills])
            except StorageUnavailable as exc:
                # Which fills are new cannot be told now: the order's level stays blocked
                # and it is looked up again until the database answers.
                log.warning(
                    "fills_check_postponed",
                    client_order_id=update.order.client_order_id,
                    error=str(exc),
                )
                book.track_unknown(_request_of(update.order))
                return
            book.remember_stored(known)
            fills = tuple(f for f in fills if f.trade_id not in known)
        effect = book.effect(OrderUpdate(update.order, fills), self._wall())
        if effect is None:
            return  # a foreign order, another grid's, or a stale update
        # Queued, not awaited: a refusal (stale fence) stops placing from the write-behind.
        await self._repo.record_execution(
            update.order, effect.fills, effect.levels, effect.round_trips, self._fence()
        )
        book.commit(effect)
        if effect.fills:
            failpoints.reach("fill_applied")
        self._report(book, effect)

    async def _cancel_stale(self, book: OrderBook, order: Order) -> None:
        """Cancel a buy of a finished cycle instead of adopting it; if it filled meanwhile,
        its fills are recorded like any other."""
        log.warning(
            "stale_order_found",
            client_order_id=order.client_order_id,
            detail="an open buy of a cycle its level has finished (sent by a former owner "
            "as it froze): cancelling it",
        )
        key = parse_client_order_id(order.client_order_id)
        assert key is not None  # is_stale parsed it
        cancel = CancelOrder(order.client_order_id, key.level, "buy", "stale")
        for answer in await self._sender.cancel(book, cancel):
            if answer.filled > 0:
                await self.absorb(book, answer)
            else:
                await self._repo.save_orders([answer])

    def _report(self, book: OrderBook, effect: Effect) -> None:
        for fill in effect.fills:
            self._metrics.fills.labels(self.symbol, fill.side).inc()
            if fill.fee:
                self._metrics.fees.labels(self.symbol, fill.fee_currency).inc(float(fill.fee))
            log.info(
                "order_filled",
                side=fill.side,
                price=str(fill.price),
                amount=str(fill.amount),
                fee=str(fill.fee),
                client_order_id=fill.client_order_id,
            )
        for trip in effect.round_trips:
            self._metrics.round_trips.labels(self.symbol).inc()
            self._notifier.emit(
                round_trip(self.symbol, trip.level, trip.cycle, trip.amount, trip.pnl)
            )
            log.info(
                "round_trip",
                grid_level=trip.level,
                cycle=trip.cycle,
                amount=str(trip.amount),
                pnl=str(trip.pnl),
            )
        self._metrics.realized_pnl.labels(self.symbol).set(float(book.realized_pnl))
        self._metrics.inventory.labels(self.symbol).set(float(book.inventory()))
        self._metrics.open_orders.labels(self.symbol).set(len(book.open_orders()))


def _request_of(order: Order) -> OrderRequest:
    return OrderRequest(order.symbol, order.side, order.price, order.amount, order.client_order_id)
