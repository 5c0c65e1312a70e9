"""Sending orders: the level lock, the lease deadline, the exchange call, and its errors.

Every placement and cancellation takes its level lock with a try (never a wait) and skips
the level when the lock is held elsewhere or the lock backend fails - no lease, no order.
The lease's deadline - and the symbol's ownership lease - is checked right before the
exchange call, and an order placed under a lease carries its fence (``Order.lock_fence``)
into the database.
Every create and cancel expires with those leases: the exchange refuses it if it arrives
later (a request stuck in a frozen process or a slow network), see ``Exchange``.
For ``verify_window`` seconds after the trader is ready (a take-over), the first placement
of each client order id is preceded by a lookup of that id: a former owner may have sent it.
A placement whose outcome is unknown is tracked as such in the book, never sent again
blindly; a rejected one cools its level down; a rate limit pauses the symbol.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import replace
from decimal import Decimal

import structlog

from quantmesh import failpoints
from quantmesh.domain import Order, OrderRequest, Side
from quantmesh.errors import (
    AuthenticationFailed,
    DuplicateOrder,
    ExchangeError,
    LockError,
    LockUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    RequestExpired,
)
from quantmesh.exchange.base import Exchange
from quantmesh.grid.ids import client_order_id
from quantmesh.grid.planner import CancelOrder, PlaceOrder
from quantmesh.lock.base import DistributedLock, Lease
from quantmesh.lock.keys import LockKeys
from quantmesh.notify.events import NOP, Notifier, order_rejected
from quantmesh.observability.metrics import Metrics
from quantmesh.observability.throttle import WarningThrottle
from quantmesh.trading.book import OrderBook

log = structlog.get_logger(__name__)

# A lock backend that keeps failing is logged once per symbol per this many seconds.
_WARN_INTERVAL = 10.0
# Exchange ids of our own recent creates remembered (their fills need no database check).
_CREATED_KEPT = 1_000


class OrderSender:
    """Places and cancels one symbol's orders."""

    def __init__(
        self,
        symbol: str,
        *,
        exchange: Exchange,
        locker: DistributedLock,
        lock_keys: LockKeys,
        metrics: Metrics,
        place_ttl: float,
        cancel_ttl: float,
        reject_cooldown: float,
        unknown_grace: float = 30.0,
        verify_window: float = 0.0,
        owner_valid: Callable[[], bool] = lambda: True,
        owner_deadline: Callable[[], float] = lambda: math.inf,
        clock: Callable[[], float] = time.monotonic,
        notifier: Notifier = NOP,
    ) -> None:
        self.symbol = symbol
        self._notifier = notifier  # counts rejections into bursts
        self._owner_valid = owner_valid
        self._owner_deadline = owner_deadline
        self._exchange = exchange
        self._locker = locker
        self._keys = lock_keys
        self._metrics = metrics
        self._place_ttl = place_ttl
        self._cancel_ttl = cancel_ttl
        self._reject_cooldown = reject_cooldown
        self._unknown_grace = unknown_grace
        self._clock = clock
        # When each create with an unknown outcome failed: until the grace has passed, "not
        # found" may only mean the exchange has not made the order visible yet.
        self._unknown_since: dict[str, float] = {}
        self._cooldown: dict[tuple[int, Side], float] = {}
        self._paused_until = 0.0
        self._warnings = WarningThrottle(_WARN_INTERVAL, clock=clock)
        # Until when a client order id is looked up before its first placement, and the
        # ids looked up so far (emptied when the window ends).
        self._verify_window = verify_window
        self._verify_until = math.inf if verify_window else 0.0  # until the window starts
        self._verified: set[str] = set()
        # Exchange ids of the orders our own creates made (the latest ones): their fills
        # cannot have been applied by an earlier process.
        self._created: OrderedDict[str, None] = OrderedDict()

    def paused(self) -> bool:
        """True while the exchange asked us to slow down."""
        return self._clock() < self._paused_until

    def may_place(self, place: PlaceOrder) -> bool:
        """False while the symbol is paused or the level cools down after a rejection."""
        now = self._clock()
        return (
            now >= self._paused_until and self._cooldown.get((place.level, place.side), 0.0) <= now
        )

    async def _acquire(self, key: str, ttl: float) -> Lease | None:
        """Try the level lock; never waits. ``None`` when held elsewhere or unavailable.

        The lock metrics are the locker's (``MeteredLock``); a backend that keeps failing
        is logged once per symbol per ``_WARN_INTERVAL`` with the count held back."""
        try:
            lease = await self._locker.try_lock(key, ttl)
        except LockUnavailable as exc:
            # Fail closed: no lease, no order.
            self._warnings.warning(log, "lock_unavailable", self.symbol, key=key, error=str(exc))
            return None
        except LockError as exc:
            self._warnings.warning(log, "lock_error", self.symbol, key=key, error=str(exc))
            return None
        if lease is None:
            log.debug("level_locked_elsewhere", key=key)
            return None
        held_back = self._warnings.drain("lock_unavailable", self.symbol)
        held_back += self._warnings.drain("lock_error", self.symbol)
        if held_back:
            log.info("lock_available_again", key=key, warnings_held_back=held_back)
        return lease

    def _leases_valid(self, lease: Lease) -> bool:
        """The level lease and the symbol's ownership are both still ours."""
        if self._clock() >= lease.deadline:
            log.warning("lease_expired_before_send", key=lease.key, fence=lease.fence)
            return False
        if not self._owner_valid():
            log.warning("ownership_lost_before_send", key=lease.key)
            return False
        return True

    async def _release(self, lease: Lease) -> None:
        """Release; a failed release leaves the key to its TTL."""
        try:
            released = await self._locker.unlock(lease)
        except LockError as exc:
            log.warning("lock_release_failed", key=lease.key, error=str(exc))
            return
        if not released:
            log.warning("lock_expired_while_held", key=lease.key, fence=lease.fence)

    async def place(self, book: OrderBook, place: PlaceOrder) -> list[Order]:
        """Place one order under its level lock; the exchange's answer, if any."""
        if not self.may_place(place):
            return []
        cycle = book.state.level(place.level).cycle
        cid = client_order_id(book.tag, place.level, place.side, cycle)
        if self._must_verify(cid):
            found = await self._verify(book, cid)
            if found is not None:
                return found
        key = self._keys.order_key(self.symbol, place.level, place.price)
        lease = await self._acquire(key, self._place_ttl)
        if lease is None:
            return []
        try:
            # The leases are checked right before the exchange call: a pause (GC,
            # SIGSTOP, a slow lock reply) past either means another holder may act.
            if not self._leases_valid(lease):
                return []
            request = OrderRequest(
                self.symbol,
                place.side,
                place.price,
                place.amount,
                cid,
                expires_at=self._expiry(lease),
            )
            order = await self._send_create(book, request, place, lease.fence)
            if order is None:
                return []
            failpoints.reach("order_answered")
            return [order]
        finally:
            await self._release(lease)

    def _expiry(self, lease: Lease) -> float | None:
        """When a request sent under ``lease`` must no longer execute: the end of the level
        lease or of the symbol's ownership, whichever comes first (``None``: neither ends)."""
        end = min(lease.deadline, self._owner_deadline())
        return None if end == math.inf else end

    def start_verify_window(self) -> None:
        """Start the ``verify_window``: the trader has loaded and reconciled its grid."""
        if self._verify_window:
            self._verify_until = self._clock() + self._verify_window

    def _must_verify(self, cid: str) -> bool:
        """Whether ``cid`` is looked up before it is placed: the first placement of each id
        within ``verify_window`` of the trader being ready."""
        if not self._verify_until:
            return False
        if self._clock() >= self._verify_until:
            self._verify_until = 0.0
            self._verified.clear()
            return False
        return cid not in self._verified

    async def _verify(self, book: OrderBook, cid: str) -> list[Order] | None:
        """Look ``cid`` up before placing it: a former owner of the symbol may have sent it,
        and it may have landed (and filled) after that owner froze. The order found is
        returned to be adopted with its fills; ``[]`` when the lookup failed (the level
        waits for the next tick); ``None`` when the id is free to place."""
        try:
            order = await self._exchange.fetch_order(self.symbol, cid)
        except OrderNotFound:
            self._verified.add(cid)
            return None
        except AuthenticationFailed:
            raise
        except ExchangeError as exc:
            self._metrics.exchange_errors.labels(self.symbol, type(exc).__name__).inc()
            log.warning("order_reuse_check_failed", client_order_id=cid, error=str(exc))
            return []
        self._verified.add(cid)
        if book.is_earlier(order):
            return None  # the id's earlier order, closed and known: free to place again
        log.warning(
            "order_found_before_reuse",
            client_order_id=cid,
            status=order.status,
            filled=str(order.filled),
            detail="sent by a former owner of the symbol: adopted, not placed again",
        )
        return [order]

    async def _send_create(
        self, book: OrderBook, request: OrderRequest, place: PlaceOrder, fence: int
    ) -> Order | None:
        """The exchange's answer; an order created here carries the lock's ``fence``."""
        try:
            order = await self._exchange.create_order(request)
        except DuplicateOrder:
            # Already placed (by us before a restart, or by another instance): adopt it.
            # Counted, because it means something else placed this grid's order.
            self._metrics.orders_rejected.labels(self.symbol, "duplicate").inc()
            log.warning("order_already_open", client_order_id=request.client_order_id)
            self._outcome_unknown(book, request)
            return await self.lookup(book, request.client_order_id)
        except RequestExpired as exc:
            # Refused as late, or not sent with too little lease left: not placed. The
            # level is free for the next tick, under a fresh lease.
            self._metrics.orders_rejected.labels(self.symbol, exc.reason).inc()
            log.warning(
                "order_request_expired", client_order_id=request.client_order_id, error=str(exc)
            )
            return None
        except RateLimited as exc:
            self._paused_until = self._clock() + (exc.retry_after or 1.0)
            self._metrics.exchange_errors.labels(self.symbol, "rate_limited").inc()
            log.warning("rate_limited", retry_after=exc.retry_after)
            return None
        except OrderRejected as exc:
            self._cooldown[(place.level, place.side)] = self._clock() + self._reject_cooldown
            self._metrics.orders_rejected.labels(self.symbol, exc.reason).inc()
            self._notifier.emit(order_rejected(self.symbol, exc.reason))
            log.warning(
                "order_rejected",
                client_order_id=request.client_order_id,
                reason=exc.reason,
                error=str(exc),
            )
            return None
        except AuthenticationFailed:
            raise  # keys revoked or expired: the daemon stops, nothing more is sent
        except ExchangeError as exc:
            # Outcome unknown: the order may exist. Never place again blindly; the id is
            # tracked as unknown until a lookup says what happened.
            self._outcome_unknown(book, request)
            self._metrics.exchange_errors.labels(self.symbol, type(exc).__name__).inc()
            log.warning(
                "order_outcome_unknown", client_order_id=request.client_order_id, error=str(exc)
            )
            return None
        if book.is_earlier(order):
            # The answer describes the id's earlier, closed order (an adapter's lookup after
            # an error found it): whether this create landed is still unknown.
            self._outcome_unknown(book, request)
            log.warning("order_outcome_unknown", client_order_id=request.client_order_id)
            return None
        self._created[order.exchange_order_id] = None
        if len(self._created) > _CREATED_KEPT:
            self._created.popitem(last=False)
        self._metrics.orders_placed.labels(self.symbol, request.side).inc()
        log.info(
            "order_placed",
            side=request.side,
            grid_level=place.level,
            price=str(request.price),
            amount=str(request.amount),
            client_order_id=request.client_order_id,
        )
        return replace(order, lock_fence=fence)

    def created_here(self, order: Order) -> bool:
        """Whether ``order`` was made by one of this sender's own creates."""
        return bool(order.exchange_order_id) and order.exchange_order_id in self._created

    def prune_unknown(self, unknown: Collection[str]) -> None:
        """Forget the grace timers of ids no longer unknown (settled by the order stream or
        a reconciliation rather than a lookup), so the map does not grow with time."""
        if len(self._unknown_since) > len(unknown):
            self._unknown_since = {
                cid: since for cid, since in self._unknown_since.items() if cid in unknown
            }

    def _outcome_unknown(self, book: OrderBook, request: OrderRequest) -> None:
        """Block the level until a lookup settles ``request``; "not found" counts only
        after the grace (an exchange may show a create it accepted late)."""
        book.track_unknown(request)
        self._unknown_since[request.client_order_id] = self._clock()

    async def cancel(self, book: OrderBook, cancel: CancelOrder) -> list[Order]:
        """Cancel one order under its level lock; the exchange's answer, if any."""
        tracked = book.get(cancel.client_order_id)
        price = tracked.price if tracked is not None else Decimal(0)
        key = self._keys.order_key(self.symbol, cancel.level, price)
        lease = await self._acquire(key, self._cancel_ttl)
        if lease is None:
            return []
        try:
            if not self._leases_valid(lease):
                return []
            order = await self._exchange.cancel_order(
                self.symbol, cancel.client_order_id, self._expiry(lease)
            )
        except OrderNotFound:
            order = None
            log.warning("cancel_unknown_order", client_order_id=cancel.client_order_id)
        except AuthenticationFailed:
            raise
        except RequestExpired as exc:  # not cancelled: the order stays open and tracked
            log.warning(
                "cancel_request_expired", client_order_id=cancel.client_order_id, error=str(exc)
            )
            return []
        except ExchangeError as exc:
            self._metrics.exchange_errors.labels(self.symbol, type(exc).__name__).inc()
            log.warning("cancel_failed", client_order_id=cancel.client_order_id, error=str(exc))
            return []
        finally:
            await self._release(lease)
        if order is None:
            book.forget(cancel.client_order_id)
            self._unknown_since.pop(cancel.client_order_id, None)
            return []
        self._metrics.orders_cancelled.labels(self.symbol, cancel.reason).inc()
        log.info("order_cancelled", client_order_id=cancel.client_order_id, reason=cancel.reason)
        return [order]

    async def lookup(self, book: OrderBook, cid: str) -> Order | None:
        """The exchange's state of an order we track as unknown; ``None`` if not settled."""
        try:
            order = await self._exchange.fetch_order(self.symbol, cid)
            if book.is_earlier(order):  # the id's earlier order: this one is not seen yet
                raise OrderNotFound(cid)
        except OrderNotFound:
            since = self._unknown_since.get(cid)
            if since is not None and self._clock() - since < self._unknown_grace:
                # An exchange can accept a timed-out create and show it only later; freeing
                # the level now could place the order a second time.
                log.debug("order_not_found_yet", client_order_id=cid)
                return None
            self._unknown_since.pop(cid, None)
            book.forget(cid)
            log.info("order_not_placed", client_order_id=cid)
        except AuthenticationFailed:
            raise
        except ExchangeError as exc:
            self._metrics.exchange_errors.labels(self.symbol, type(exc).__name__).inc()
            log.warning("order_lookup_failed", client_order_id=cid, error=str(exc))
        else:
            self._unknown_since.pop(cid, None)
            return order
        return None
