"""The in-process simulated exchange: the matching engine, price feeds and a state file.

Every state change is persisted before its result is returned or published, so a restart
from the same state file never resurrects a filled order as open nor loses a fill that a
caller has seen. Order subscribers receive fills and cancellations (not new orders: the
caller of ``create_order`` already has those); fills caused by a price tick are published
before the tick itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeVar

import structlog

from quantmesh.domain import ClockOffset, Fill, MarketRules, Order, OrderRequest, OrderUpdate, Tick
from quantmesh.errors import Disconnected, RequestExpired, StartupError
from quantmesh.exchange.fanout import Subscribers, Subscription
from quantmesh.exchange.sim.feeds import FeedFactory, PriceFeed, run_feed
from quantmesh.exchange.sim.matching import FillRule, MatchingEngine
from quantmesh.exchange.sim.store import SimStore

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SimMarket:
    """One simulated market: its rules, its first price, and how its prices move.

    ``feed`` builds the price feed from the rules and the price to resume from (the last
    persisted price, or ``start_price`` on a fresh start); without one, prices only move
    through ``SimulatedExchange.set_price``.
    """

    rules: MarketRules
    start_price: Decimal
    feed: FeedFactory | None = None


class SimulatedExchange:
    """An ``Exchange`` backed by ``MatchingEngine``, persisted to ``state_path`` if given;
    ``fill_rule`` is the engine's (``touch``, or ``through``: a resting order fills only
    when the price goes beyond it)."""

    def __init__(
        self,
        markets: Mapping[str, SimMarket],
        balances: Mapping[str, Decimal],
        fee_rate: Decimal,
        state_path: Path | None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        latency: float = 0.0,
        tick_queue_size: int = 16,
        price_persist_interval: float = 0.25,
        fill_rule: FillRule = "touch",
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        if tick_queue_size < 1:
            raise ValueError(f"tick queue size must be >= 1, got {tick_queue_size}")
        for symbol, market in markets.items():
            if not market.start_price > 0:
                raise ValueError(f"start price of {symbol} must be positive")
        self._markets = dict(markets)
        self._engine = MatchingEngine(
            {s: m.rules for s, m in markets.items()},
            balances,
            fee_rate,
            clock,
            fill_rule=fill_rule,
        )
        self._state_path = state_path
        self._clock = clock
        self._sleep = sleep
        self._latency = latency
        self._tick_queue_size = tick_queue_size
        self._price_persist_interval = price_persist_interval
        self._store: SimStore | None = None
        self._state: Literal["new", "running", "closed"] = "new"
        self._tasks: set[asyncio.Task[None]] = set()
        # Weak sets: an iterator its consumer dropped unsubscribes itself.
        self._tick_subs: dict[str, Subscribers[Tick]] = {s: Subscribers() for s in markets}
        self._latest: dict[str, Tick] = {}  # each market's last published tick
        self._order_subs: dict[str, Subscribers[OrderUpdate]] = {s: Subscribers() for s in markets}
        self._dirty: dict[str, None] = {}  # ids of orders changed since the last save
        self._pending: list[OrderUpdate] = []  # updates to publish after the next save
        self._last_save = float("-inf")

    @property
    def name(self) -> str:
        return "simulated"

    @property
    def symbols(self) -> list[str]:
        return sorted(self._markets)

    @property
    def engine(self) -> MatchingEngine:
        """The matching engine, for inspection (tests, benches); do not mutate it."""
        return self._engine

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the state file (if any) and start one feed task per market."""
        if self._state != "new":
            raise RuntimeError(f"simulated exchange cannot start when {self._state}")
        try:
            self._restore()
            for symbol, market in self._markets.items():
                if self._engine.last_price(symbol) is None:
                    self._engine.on_price(symbol, market.start_price)
            self._commit()
            feeds = self._build_feeds()
        except sqlite3.Error as exc:
            self._close_store()
            raise StartupError(f"simulated exchange state cannot be written: {exc}") from exc
        except BaseException:
            self._close_store()
            raise
        self._state = "running"
        for feed in feeds:
            task = asyncio.create_task(
                run_feed(feed, self._on_tick, sleep=self._sleep, clock=self._clock),
                name=f"sim-feed-{feed.symbol}",
            )
            task.add_done_callback(self._feed_done)
            self._tasks.add(task)
        log.info(
            "sim_exchange_started",
            markets=sorted(self._markets),
            state_path=str(self._state_path) if self._state_path else None,
        )

    async def close(self) -> None:
        """Stop the feeds, persist, end every subscription; idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.clear()
            try:
                self._commit()
            except sqlite3.Error as exc:
                log.error("sim_persist_failed", stage="close", error=str(exc))
            self._close_store()
            for tick_subs in self._tick_subs.values():
                tick_subs.end_all()
            for order_subs in self._order_subs.values():
                order_subs.end_all()
            log.info("sim_exchange_closed")

    def _restore(self) -> None:
        if self._state_path is None:
            return
        self._store = SimStore(self._state_path)
        try:
            snapshot = self._store.load()
            if snapshot is not None:
                self._engine.restore(snapshot)
        except (sqlite3.Error, ValueError) as exc:
            raise StartupError(
                f"simulated exchange state {self._state_path} cannot be restored: {exc}"
            ) from exc
        if snapshot is not None:
            orders = self._engine.all_orders()
            log.info(
                "sim_state_restored",
                orders=len(orders),
                open_orders=sum(o.is_open for o in orders),
                last_prices={s: str(p) for s, p in snapshot["last_prices"].items()},
            )

    def _build_feeds(self) -> list[PriceFeed]:
        feeds = []
        for symbol, market in self._markets.items():
            if market.feed is not None:
                last = self._engine.last_price(symbol)
                start = market.start_price if last is None else last
                feeds.append(market.feed(market.rules, start))
        return feeds

    def _feed_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("sim_feed_failed", task=task.get_name(), error=repr(exc), exc_info=exc)
        else:
            log.info("sim_feed_ended", task=task.get_name())

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- Exchange protocol --------------------------------------------------------------

    async def market(self, symbol: str) -> MarketRules:
        await self._before_call()
        return self._engine.rules(symbol)

    def watch_ticks(self, symbol: str) -> AsyncIterator[Tick]:
        """Ticks of ``symbol``, the latest one first (as an exchange's ticker stream opens
        with the current ticker); a slow consumer loses the oldest ones, never the latest."""
        self._engine.rules(symbol)
        subscription = Subscription[Tick](self._tick_subs[symbol], self._tick_queue_size)
        ticks = self._subscribe(subscription)
        latest = self._latest.get(symbol)
        if latest is not None and self._state != "closed":
            subscription.push(latest)
        return ticks

    def watch_orders(self, symbol: str) -> AsyncIterator[OrderUpdate]:
        """Fills and cancellations of orders on ``symbol``; none is ever dropped."""
        self._engine.rules(symbol)
        subscription = Subscription[OrderUpdate](self._order_subs[symbol], 0)
        return self._subscribe(subscription)

    async def create_order(self, request: OrderRequest) -> Order:
        await self._before_call()
        _check_expiry(request.expires_at, request.client_order_id)
        update = self._engine.submit(request)
        self._dirty[update.order.exchange_order_id] = None
        if update.fills:
            self._pending.append(update)
        self._commit_or_raise()
        log.debug(
            "sim_order_placed",
            symbol=request.symbol,
            side=request.side,
            price=str(request.price),
            amount=str(request.amount),
            client_order_id=request.client_order_id,
            status=update.order.status,
        )
        return update.order

    async def cancel_order(
        self, symbol: str, client_order_id: str, expires_at: float | None = None
    ) -> Order:
        await self._before_call()
        _check_expiry(expires_at, client_order_id)
        was_open = self._engine.get(symbol, client_order_id).is_open
        order = self._engine.cancel(symbol, client_order_id)
        if was_open:
            self._dirty[order.exchange_order_id] = None
            self._pending.append(OrderUpdate(order))
            log.debug("sim_order_canceled", symbol=symbol, client_order_id=client_order_id)
        self._commit_or_raise()
        return order

    def clock_offset(self) -> ClockOffset | None:
        return None  # in process: the exchange's clock is ours

    def stream_reconnects(self) -> Mapping[tuple[str, str], int]:
        return {}  # in process: no stream to lose

    def price_health(self) -> None:
        return None  # in process: a price cannot stop silently

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order:
        await self._before_call()
        self._commit_or_raise()  # never report a state that is not persisted yet
        return self._engine.get(symbol, client_order_id)

    async def fetch_order_fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        await self._before_call()
        self._commit_or_raise()
        return self._engine.order_fills(symbol, client_order_id)

    async def fetch_orders_since(self, symbol: str, since: float) -> list[Order]:
        await self._before_call()
        self._engine.rules(symbol)
        return [
            o for o in self._engine.all_orders() if o.symbol == symbol and o.created_at >= since
        ]

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        await self._before_call()
        self._commit_or_raise()
        return self._engine.open_orders(symbol)

    # -- price ticks --------------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal) -> None:
        """Move the price of ``symbol`` as a feed tick would (a hook for tests and benches)."""
        self._check_running()
        self._on_tick(Tick(symbol, price, self._clock()))

    def _on_tick(self, tick: Tick) -> None:
        updates = self._engine.on_price(tick.symbol, tick.price)
        for update in updates:
            self._dirty[update.order.exchange_order_id] = None
            fill = update.fills[0]
            log.debug(
                "sim_order_filled",
                symbol=fill.symbol,
                side=fill.side,
                price=str(fill.price),
                amount=str(fill.amount),
                client_order_id=fill.client_order_id,
            )
        self._pending.extend(updates)
        # A price alone is persisted lazily: a crash may lose the latest price, no order or fill.
        due = time.monotonic() - self._last_save >= self._price_persist_interval
        if self._dirty or self._pending or due:
            try:
                self._commit()
            except sqlite3.Error as exc:
                # Neither fills nor the tick are published until they are persisted.
                log.error("sim_persist_failed", stage="tick", error=str(exc))
                return
        self._latest[tick.symbol] = tick
        self._tick_subs[tick.symbol].publish(tick)

    # -- internals ----------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != "running":
            raise Disconnected(f"simulated exchange is {self._state}, not running")

    async def _before_call(self) -> None:
        self._check_running()
        if self._latency > 0:
            await self._sleep(self._latency)
            self._check_running()

    def _commit(self) -> None:
        """Persist what changed, then publish the updates waiting for it."""
        if self._store is not None:
            orders = [self._engine.order_snapshot(i) for i in self._dirty]
            self._store.save(self._engine.snapshot_header(), orders)
        self._last_save = time.monotonic()
        self._dirty.clear()
        pending, self._pending = self._pending, []
        for update in pending:
            subscribers = self._order_subs.get(update.order.symbol)
            if subscribers is not None:
                subscribers.publish(update)

    def _commit_or_raise(self) -> None:
        if not self._dirty and not self._pending:
            return
        try:
            self._commit()
        except sqlite3.Error as exc:
            log.error("sim_persist_failed", stage="call", error=str(exc))
            raise Disconnected(f"simulated exchange state cannot be saved: {exc}") from exc

    def _subscribe(self, subscription: Subscription[_T]) -> AsyncIterator[_T]:
        # Registered now, not at the first iteration, so nothing between the two is missed.
        if self._state == "closed":
            subscription.end()
        else:
            subscription.register()
        return subscription


def _check_expiry(expires_at: float | None, client_order_id: str) -> None:
    """Refuse a request that arrives after its expiry, as a real exchange does."""
    if expires_at is not None and time.monotonic() > expires_at:
        raise RequestExpired(f"request for {client_order_id} arrived after its expiry")
