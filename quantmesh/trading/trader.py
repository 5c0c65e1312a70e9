"""The per-symbol trader: prices in, planner, lock, exchange, repository out.

One trader owns one symbol's grid. Everything that changes the grid - planning and
placing on a price, applying an order update - runs under one mutex, so a fill for an
order is applied only after its placement has been recorded, and shutdown can wait for
in-flight exchange calls by taking the mutex. Applying an order update to the book is its
``Recorder``'s (``trading.recorder``), whose records are stored behind the trader's back
by its ``WriteBehind`` (``trading.write_behind``). Checking the grid's orders against the
exchange - at start, every round, and for orders of unknown outcome - is its
``Reconciler``'s (``trading.reconcile``), which applies what it finds through the recorder.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal

import structlog

from quantmesh.cancel import stop_if_cancelling
from quantmesh.control.desired import ACTIVE, Desired
from quantmesh.domain import (
    MarketRules,
    Order,
    OrderUpdate,
    Tick,
    floor_to,
)
from quantmesh.errors import (
    LockLost,
    StartupError,
    StorageError,
)
from quantmesh.exchange.base import Exchange
from quantmesh.grid.ids import grid_tag
from quantmesh.grid.liquidate import Liquidation
from quantmesh.grid.planner import CancelOrder, OpenOrder
from quantmesh.grid.pnl import Position, day_of
from quantmesh.grid.risk import Fired, RiskLimits
from quantmesh.grid.state import GridParams, GridShape, GridSpec, GridState, LevelState
from quantmesh.lock.base import DistributedLock
from quantmesh.lock.keys import LockKeys
from quantmesh.notify.events import NOP, Notifier
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.base import Repository
from quantmesh.storage.group_commit import GroupCommit
from quantmesh.trading.book import OrderBook
from quantmesh.trading.reconcile import Reconciler
from quantmesh.trading.recorder import Recorder
from quantmesh.trading.risk import PeakStore, RiskGuard
from quantmesh.trading.risk import Record as RiskRecord
from quantmesh.trading.sender import OrderSender
from quantmesh.trading.steering import Steering
from quantmesh.trading.write_behind import WriteBehind

log = structlog.get_logger(__name__)

RECENT_TICK = 1.0  # seconds: a new grid's anchoring price is acted on when no older


@dataclass(frozen=True, slots=True)
class TraderSettings:
    """One symbol's grid parameters plus the trader's own timings (seconds)."""

    grid: GridParams
    place_ttl: float = 5.0
    cancel_ttl: float = 3.0
    reject_cooldown: float = 30.0
    unknown_grace: float = 30.0  # a timed-out create not found is trusted as absent after this
    verify_window: float = 0.0  # after a take-over: ids looked up before their first placement
    lookup_interval: float = 1.0  # between lookups of orders whose placement outcome is unknown
    price_save_interval: float = 5.0
    reconcile_interval: float = 60.0  # between checks of our open orders against the exchange
    reconcile_ttl: float = 30.0  # the reconcile lock's lease
    liquidation: Liquidation = field(default_factory=Liquidation)  # re-pricing, bound
    count_days: bool = False  # read the day's stored PnL at start (the instance's limits)
    risk: RiskLimits | None = None  # the symbol's risk exits (None: none)

    @property
    def symbol(self) -> str:
        return self.grid.symbol


@dataclass(frozen=True, slots=True)
class Started:
    """What a trader works with once its grid is loaded: the book and its reconciler."""

    book: OrderBook
    reconciler: Reconciler


class Trader:
    """Trades one symbol's grid: loads and claims it, then plans on prices and records the
    order updates; ``book`` and ``rules`` are ``None`` until the grid is loaded."""

    def __init__(
        self,
        settings: TraderSettings,
        *,
        exchange: Exchange,
        repository: Repository,
        locker: DistributedLock,
        lock_keys: LockKeys,
        metrics: Metrics,
        reconcile_locker: DistributedLock | None = None,
        fence: Callable[[], int] = lambda: 0,
        exclusive: bool = False,
        owner_valid: Callable[[], bool] = lambda: True,
        owner_deadline: Callable[[], float] = lambda: math.inf,
        placing_block: Callable[[], str | None] = lambda: None,
        control: Callable[[], Desired | None] = lambda: ACTIVE,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        notifier: Notifier = NOP,
        risk_record: RiskRecord | None = None,
        risk_peaks: PeakStore | None = None,
        group_commit: GroupCommit | None = None,
    ) -> None:
        self.settings = settings
        self._notifier = notifier
        self.symbol = settings.symbol
        self._exchange = exchange
        # order and fill records are stored behind the trader's back, in order
        queue = metrics.write_queue.labels(settings.symbol)
        self._repo = WriteBehind(
            repository,
            settings.symbol,
            fence=lambda: self._fence(),
            on_failure=self.stop_placing,
            queued=queue.set,
            group=group_commit,
        )
        self._reconcile_locker = locker if reconcile_locker is None else reconcile_locker
        self._keys = lock_keys
        self._metrics = metrics
        self._fence = fence
        self._exclusive = exclusive  # no other process can own this grid (one instance)
        self._clock = clock
        self._wall = wall_clock
        self._mutex = asyncio.Lock()
        self._placing = True
        self._owner_valid = owner_valid
        self._quiesced: asyncio.Task[None] | None = None
        self._sender = OrderSender(
            settings.symbol,
            exchange=exchange,
            locker=locker,
            lock_keys=lock_keys,
            metrics=metrics,
            place_ttl=settings.place_ttl,
            cancel_ttl=settings.cancel_ttl,
            reject_cooldown=settings.reject_cooldown,
            unknown_grace=settings.unknown_grace,
            verify_window=settings.verify_window,
            owner_valid=owner_valid,
            owner_deadline=owner_deadline,
            clock=clock,
            notifier=notifier,
        )
        self._recorder = Recorder(
            settings.symbol,
            exchange=exchange,
            writes=self._repo,
            sender=self._sender,
            metrics=metrics,
            fence=lambda: self._fence(),
            notifier=notifier,
            wall_clock=wall_clock,
        )
        self._next_lookup = 0.0
        self._days_before: dict[str, Decimal] = {}  # stored realized PnL by day, at start
        self._last_price_saved = -1e18
        self._price_save_failing = False
        self._health = exchange.price_health()
        self.last_tick: Tick | None = None
        self.ready = asyncio.Event()  # set once the grid is loaded and reconciled
        self._started: Started | None = None  # once the grid is loaded
        risk = RiskGuard(
            self.symbol,
            settings.risk or RiskLimits(),
            metrics=metrics,
            record=risk_record,
            wall_clock=wall_clock,
            notifier=notifier,
            peaks=risk_peaks,
        )
        self._steering = Steering(
            control=control,
            placing_block=placing_block,
            risk=risk,
            liquidation=settings.liquidation,
            clock=clock,
            wall_clock=wall_clock,
        )

    # lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Trade until cancelled. Raises on a failure that stops this symbol."""
        with structlog.contextvars.bound_contextvars(symbol=self.symbol):
            # Subscribe before reconciling, so no update falls between the two.
            updates = self._exchange.watch_orders(self.symbol)
            ticks = self._exchange.watch_ticks(self.symbol)
            try:
                started = await self._start(ticks)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._repo.watch())
                    tg.create_task(self._order_loop(started.book, updates))
                    tg.create_task(started.reconciler.run())
                    await self._tick_loop(started, ticks)
            finally:
                await self._repo.close()  # the symbol is not left with records unstored
                await self._steering.risk.close()

    async def _start(self, ticks: AsyncIterator[Tick]) -> Started:
        """Load (or create) the grid, claim it, and reconcile it with the exchange."""
        rules = await self._exchange.market(self.symbol)
        state = await self._load_grid(rules, ticks)
        spec = self.settings.grid.anchored_at(state.anchor)
        tag = grid_tag(self.symbol, spec.anchor, spec.interval, spec.spacing)
        book = OrderBook(spec, rules, state, tag)
        self._started = Started(book, self._reconciler(book))
        await self._started.reconciler.catch_up()
        if self._steering.risk.watching or self.settings.count_days:
            # equity and the day's PnL count the round trips stored before this start
            trips = await self._repo.get_round_trips(self.symbol)
            stored = sum((trip.pnl for trip in trips), Decimal(0))
            self._steering.risk.realized_before = stored - book.realized_pnl
            await self._steering.risk.restore()
            for trip in trips:
                day = day_of(trip.closed_at)
                self._days_before[day] = self._days_before.get(day, Decimal(0)) + trip.pnl
            for day, pnl in book.realized_days.items():
                self._days_before[day] = self._days_before.get(day, Decimal(0)) - pnl
        self._sender.start_verify_window()  # after the reconciliation, however long it took
        self.ready.set()
        return self._started

    async def _load_grid(self, rules: MarketRules, ticks: AsyncIterator[Tick]) -> GridState:
        """The stored grid, or a new one anchored at the configured or the first price;
        claimed, and in the configured shape."""
        state = await self._repo.load_grid(self.symbol)
        grid = self.settings.grid
        shape = GridShape(grid.spacing, grid.interval)
        resumed = state is not None
        if state is None:
            anchor = grid.anchor_price
            if anchor is None:
                first = await anext(ticks)
                self._on_tick_seen(first)
                anchor = floor_to(first.price, rules.tick_size)
            _check_spacing(grid.anchored_at(anchor), rules)
            state = await self._repo.init_grid(self.symbol, anchor, shape)
            log.info("grid_created", anchor=str(state.anchor))
        state = await self._claim(state)
        if resumed:
            _check_spacing(grid.anchored_at(state.anchor), rules)
            log.info("grid_resumed", anchor=str(state.anchor), levels=len(state.levels))
        if state.shape != shape:
            await self._reshape(state, shape)
        return state

    def _reconciler(self, book: OrderBook) -> Reconciler:
        return Reconciler(
            book,
            exchange=self._exchange,
            repository=self._repo,
            sender=self._sender,
            record=lambda update: self._recorder.record(book, update),
            absorb=lambda order: self._recorder.absorb(book, order),
            mutex=self._mutex,
            locker=self._reconcile_locker,
            lock_keys=self._keys,
            metrics=self._metrics,
            interval=self.settings.reconcile_interval,
            lock_ttl=self.settings.reconcile_ttl,
            placing=lambda: self._placing,
            wall_clock=self._wall,
        )

    async def _claim(self, state: GridState) -> GridState:
        """Store this trader's fence on the grid, then read the grid again: from here on a
        former owner's late writes are refused, so what is read is what it left.

        An exclusive trader (one instance, no lease) takes a fence above the stored one
        when its own is not: a clock stepped back, or a grid a fleet traded before."""
        if self._exclusive and self._fence() <= state.fence:
            above = state.fence + 1
            self._fence = lambda: above
        if not await self._repo.save_levels(self.symbol, [], self._fence()):
            raise LockLost(f"grid:{self.symbol}")
        fresh = await self._repo.load_grid(self.symbol)
        return state if fresh is None else fresh

    async def _reshape(self, state: GridState, shape: GridShape) -> None:
        """Take the configured spacing and step, unless the grid has anything on its levels."""
        old = state.shape
        if old is not None:
            held = sum(1 for level in state.levels.values() if level.holding > 0)
            orders = len(await self._repo.get_open_orders(self.symbol))
            if held or orders:
                raise StartupError(
                    f"{self.symbol}: the grid was built with {old.spacing} spacing, step "
                    f"{old.interval.normalize():f}, and the settings now say {shape.spacing}, "
                    f"step {shape.interval.normalize():f}; it holds inventory on {held} levels "
                    f"and {orders} open orders that would be priced on other levels. Put the "
                    "old step back, or change it once the grid holds nothing"
                )
        if not await self._repo.set_grid_shape(self.symbol, shape, self._fence()):
            raise LockLost(f"grid:{self.symbol}")
        state.shape = shape
        log.info(
            "grid_shape_set",
            spacing=shape.spacing,
            step=str(shape.interval),
            previous=None if old is None else str(old.interval),
        )

    def stop_placing(self) -> None:
        """No new orders from now on; in-flight calls finish."""
        self._placing = False

    # read-only view for status and readiness --------------------------------------------

    @property
    def stopped(self) -> bool:
        """Told to stop placing (shutdown, or a lost grid)."""
        return not self._placing

    @property
    def trading(self) -> bool:
        """Grid loaded and reconciled, and still placing orders: not stopped, and the
        ownership lease valid (a lost one stops every exchange call at once, while the
        trader's records may still be on their way to the database)."""
        return self.ready.is_set() and self._placing and self._owner_valid()

    @property
    def price_fresh(self) -> bool:
        """Whether the exchange vouches for this symbol's price; a stale symbol places
        nothing (exchanges that cannot go stale always say yes)."""
        return self._health is None or self._health.price_fresh(self.symbol)

    @property
    def price_age(self) -> float | None:
        """Seconds since this symbol's last price; ``None`` before the first one."""
        if self._health is not None:
            return self._health.price_age(self.symbol)
        if self.last_tick is None:
            return None
        return max(self._wall() - self.last_tick.ts, 0.0)

    @property
    def book(self) -> OrderBook | None:
        """The grid's book once it is loaded (reconciled once ``ready`` is set)."""
        return None if self._started is None else self._started.book

    @property
    def rules(self) -> MarketRules | None:
        """The market's rules once the grid is loaded."""
        return None if self._started is None else self._started.book.rules

    @property
    def inventory(self) -> Decimal:
        return Decimal(0) if self.book is None else self.book.inventory()

    @property
    def open_order_count(self) -> int:
        return 0 if self.book is None else len(self.book.open_orders())

    @property
    def realized_pnl(self) -> Decimal:
        """Realized PnL of the round trips completed since this process started."""
        return Decimal(0) if self.book is None else self.book.realized_pnl

    @property
    def fees_paid(self) -> dict[str, Decimal]:
        """Fees of the fills applied since this process started, by currency."""
        return {} if self.book is None else dict(self.book.fees)

    def realized_on(self, day: str) -> Decimal:
        """Realized PnL of the round trips closed on UTC ``day`` (those stored before this
        start counted only with ``count_days``)."""
        book_days = {} if self.book is None else self.book.realized_days
        return self._days_before.get(day, Decimal(0)) + book_days.get(day, Decimal(0))

    @property
    def position(self) -> Position | None:
        """The grid's position at the last price (None before the grid and a price)."""
        if self.book is None or self.last_tick is None:
            return None
        return self.book.position(self.last_tick.price)

    @property
    def grid_spec(self) -> GridSpec | None:
        """The grid's spec (its anchor in use) once the grid is loaded."""
        return None if self.book is None else self.book.spec

    @property
    def orders(self) -> list[OpenOrder]:
        """The grid's open orders, with those whose placement outcome is unknown."""
        return [] if self.book is None else self.book.open_orders()

    @property
    def holdings(self) -> list[LevelState]:
        """The levels holding inventory (bought there, not yet sold)."""
        return [] if self.book is None else self.book.holding_levels()

    async def quiesce(self) -> None:
        """Wait until no exchange call is in flight and every record is stored, then keep
        it that way.

        Takes the mutex and never gives it back: call only on the way out. Callers may
        overlap (a hand-off and a shutdown): they all wait for the same acquisition, and
        one that gives up waiting does not call it off.
        """
        self.stop_placing()
        if self._quiesced is None:
            self._quiesced = asyncio.ensure_future(self._settle())
        await asyncio.shield(self._quiesced)

    async def _settle(self) -> None:
        await self._mutex.acquire()
        await self._repo.close()

    async def cancel_open_orders(self, concurrency: int = 8) -> int:
        """Cancel every open order of this grid (``cancel_on_exit``); call after quiesce.

        Up to ``concurrency`` cancellations are in flight at once, each under its level
        lock as during trading. What was cancelled is recorded even when the caller's
        timeout ends the rest. Returns how many orders are still open afterwards.
        """
        book = self.book
        if book is None:
            return 0
        answers: list[Order] = []
        gate = asyncio.Semaphore(concurrency)

        async def cancel_one(tracked: OpenOrder) -> None:
            async with gate:
                cancel = CancelOrder(
                    tracked.client_order_id, tracked.level, tracked.side, "shutdown"
                )
                answers.extend(await self._sender.cancel(book, cancel))

        try:
            async with asyncio.TaskGroup() as tg:
                for tracked in book.open_orders():
                    tg.create_task(cancel_one(tracked))
        finally:
            await self._recorder.record_answers(book, answers)
            await self._repo.close()
        return len(book.open_orders())

    # loops -----------------------------------------------------------------------------

    async def _tick_loop(self, started: Started, ticks: AsyncIterator[Tick]) -> None:
        anchored = self.last_tick  # the price a new grid was anchored at, if any
        if anchored is not None and self._wall() - anchored.ts < RECENT_TICK:
            await self._on_tick(started, anchored)  # act on it now, not at the next price
        async for tick in ticks:
            self._on_tick_seen(tick)
            await self._on_tick(started, tick)
            stop_if_cancelling()  # one a client swallowed in the step

    async def _on_tick(self, started: Started, tick: Tick) -> None:
        if not self._placing or not self.price_fresh:
            return  # a stale price fires no trigger and places nothing
        self._steering.check_risk(tick.price, started.book, self.settings.grid.order_quantity)
        async with self._mutex:
            if self._placing:
                await self._step(started, tick.price)
        now = self._clock()
        if now - self._last_price_saved >= self.settings.price_save_interval:
            self._last_price_saved = now
            await self._save_price(tick)

    async def _order_loop(self, book: OrderBook, updates: AsyncIterator[OrderUpdate]) -> None:
        async for update in updates:
            async with self._mutex:
                await self._recorder.record(book, update)
            stop_if_cancelling()  # one a client swallowed in the recording

    def _on_tick_seen(self, tick: Tick) -> None:
        self.last_tick = tick
        self._metrics.last_price.labels(self.symbol).set(float(tick.price))
        self._metrics.last_price_ts.labels(self.symbol).set(tick.ts)

    async def _save_price(self, tick: Tick) -> None:
        try:
            await self._repo.save_last_price(self.symbol, tick.price, tick.ts)
        except StorageError as exc:  # the price is informational; trading goes on
            if not self._price_save_failing:  # once per outage, not every few seconds
                log.warning("last_price_not_saved", error=str(exc))
            self._price_save_failing = True
        else:
            self._price_save_failing = False

    # one step: plan, cancel, place ----------------------------------------------------------

    async def _step(self, started: Started, price: Decimal) -> None:
        book = started.book
        now = self._clock()
        if self._sender.paused() or self._steering.blocked():
            return
        desired = self._steering.desired()
        if desired is None:  # never fail open: what a person asked is not known yet
            return
        unknown = book.unknown_ids()
        if unknown and now >= self._next_lookup:
            self._next_lookup = now + self.settings.lookup_interval
            await started.reconciler.resolve_unknown()
        self._sender.prune_unknown(unknown)
        open_orders = book.open_orders()
        result = self._steering.plan(desired, book, price, open_orders)
        for skipped in result.skipped:
            self._metrics.orders_skipped.labels(self.symbol, skipped.reason).inc()
        # An order being looked up is not cancelled: its lookup settles it, and one that
        # filled while its fills cannot be applied (the database away) would otherwise be
        # cancelled again at every price, each answered "unknown order".
        looked_up = set(book.unknown_ids()) if unknown else ()
        # Act first, record after: the exchange calls of one plan go out back to back and
        # their answers are stored together (the plan is not re-run before they are).
        answers: list[Order] = []
        try:
            for cancel in result.cancels:
                if cancel.client_order_id in looked_up:
                    continue
                answers.extend(await self._sender.cancel(book, cancel))
            for place in result.places:
                if not self._placing or self._sender.paused():
                    break
                answers.extend(await self._sender.place(book, place))
        finally:
            await self._recorder.record_answers(book, answers)

    @property
    def control(self) -> Desired | None:
        """What a person asked of this symbol, as this instance knows it now (a risk
        trigger's hold while the board has not read it back)."""
        return self._steering.control

    def impose(self, fired: Fired) -> None:
        """Hold this symbol for a trigger of the instance's risk limits."""
        self._steering.impose(fired)


def _check_spacing(spec: GridSpec, rules: MarketRules) -> None:
    """Levels closer than the market's tick would collapse onto one price: refuse them."""
    step = spec.interval if spec.spacing == "arithmetic" else spec.anchor * spec.interval
    if step < rules.tick_size:
        raise StartupError(
            f"{spec.symbol}: the grid step {step.normalize():f} is finer than the market's "
            f"price tick {rules.tick_size.normalize():f}; use a step of at least one tick"
        )
