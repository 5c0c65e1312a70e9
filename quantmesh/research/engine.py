"""One symbol's grid run over candles, in simulated time, with the daemon's own parts.

What trades is what the daemon runs: ``grid.planner.plan`` decides, the trader's
``OrderBook`` (``grid.ledger`` underneath) accounts every fill and closes the round trips,
``grid.ids`` names every order, and the simulator's ``MatchingEngine`` accepts orders under
the market's rules (tick, lot, minimum amount and notional) and fills them: a resting
order at its own price when the price reaches it, a marketable one at once at the last
price; the fee is ``fee_rate`` of the notional, in the quote currency. The quote balance is
unbounded: what the grid needed is reported as the peak capital used.

Simulated time, plain loops. The price path through each candle is ``path``'s model. An
*event* is a price at which something can change: a resting order is reached, or the
price crosses a grid level (the window moves). At each event, as the daemon does on each
price: the engine fills what the price reached, the book records it, then the planner
runs and its cancels and placements go to the engine; if one of them filled at once (a
sell left below the price), the planner runs again at the same price - a live price dwells
at a level for many ticks. Between events nothing can change (the plan depends on the
price only through the level below it), so a candle that reaches no event costs a few
integer comparisons: prices are handled as whole ticks.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal

from quantmesh.domain import MarketRules, OrderRequest, OrderUpdate, floor_to
from quantmesh.errors import OrderRejected
from quantmesh.exchange.sim.matching import FillRule, MatchingEngine
from quantmesh.grid.ids import client_order_id, grid_tag
from quantmesh.grid.levels import level_below, level_price
from quantmesh.grid.planner import CancelOrder, Plan, plan
from quantmesh.grid.state import GridShape, GridSpec, GridState, RoundTrip
from quantmesh.research.candles import Candles
from quantmesh.research.errors import ResearchError
from quantmesh.research.path import VERTEX_TIMES, PathModel, high_first
from quantmesh.research.record import Curve, RunRecord, SymbolSetup
from quantmesh.trading.book import OrderBook

__all__ = [
    "MAX_REPLANS",
    "Curve",
    "RunRecord",
    "SymbolSetup",
    "run_symbol",
]  # record types re-exported

MAX_REPLANS = 8
"""Planner runs at one price at most (each one after an order filled at once)."""
CURVE_POINTS = 2000
"""Samples kept of the price, equity and inventory curves (the report's charts)."""
_BALANCE = Decimal(10) ** 15  # an unbounded quote balance: the capital used is measured
_NONE_BELOW = -(1 << 62)
_NO_SKIPS: Counter[str] = Counter()  # shared, never changed
_NONE_ABOVE = 1 << 62
_BOOKS = 20_000  # books whose planner answers are kept; forgotten all at once past it
_MASK = (1 << 64) - 1
_ZOBRIST_SEED = 17


class _BookMemo:
    """The planner's answers for one book: where it did nothing (level below the price ->
    what it skipped, whether ``max_position`` held a buy back) and what it said at a price
    (ticks -> the plan, the interned open orders it cancelled, what it skipped)."""

    __slots__ = ("plans", "quiet")

    def __init__(self) -> None:
        self.quiet: dict[int, tuple[Counter[str], bool]] = {}
        self.plans: dict[int, tuple[Plan, tuple[int, ...], Counter[str]]] = {}


class _Run:
    """The state of one run; ``run_symbol`` drives it."""

    def __init__(
        self,
        setup: SymbolSetup,
        anchor: Decimal,
        trace: bool,
        remember_quiet: bool = True,
        fill: FillRule = "touch",
    ) -> None:
        rules = setup.rules
        self.rules = rules
        self.symbol = rules.symbol
        self.tick = rules.tick_size
        spec = setup.params.anchored_at(anchor)
        _check_spacing(spec, rules)
        self.spec = spec
        self.tag = grid_tag(spec.symbol, spec.anchor, spec.interval, spec.spacing)
        state = GridState(self.symbol, anchor, shape=GridShape(spec.spacing, spec.interval))
        self.book = OrderBook(spec, rules, state, self.tag)
        self.now = 0.0
        self.engine = MatchingEngine(
            {self.symbol: rules},
            {rules.quote: _BALANCE},
            setup.fee_rate,
            self._clock,
            fill_rule=fill,
        )
        self.fill = fill
        self._beyond = 1 if fill == "through" else 0  # ticks past an order's price to fill it
        self.round_trips: list[RoundTrip] = []
        self.skipped: Counter[str] = Counter()
        self.rejected = 0
        self.capped = False  # the last plan held a buy back for max_position
        self.buy_ticks: dict[str, int] = {}  # open buys: client id -> price in ticks
        self.buy_quote: dict[str, float] = {}  # open buys: client id -> price x amount
        self.sell_ticks: dict[str, int] = {}  # open sells: client id -> price in ticks
        self._bands: dict[int, tuple[int, int]] = {}
        self.base = level_below(spec, anchor)
        self.down_at = self.up_next = 0  # the level thresholds, in ticks
        self.best_buy = _NONE_BELOW
        self.best_sell = _NONE_ABOVE
        self.quiet_low = self.quiet_high = 0
        self.price = Decimal(0)
        self._engine_price: Decimal | None = None  # the last price the engine was told
        self._holding = Decimal(0)  # the sums over the levels of the ledger
        self._cost = Decimal(0)
        self.inventory = 0.0
        self.cost = 0.0
        self.realized = 0.0
        self.capital = 0.0
        self.peak_inventory = 0.0  # both at every event, not only at candle closes
        self.peak_capital = 0.0
        self.events: list[tuple[float, Decimal]] | None = [] if trace else None
        self.version = 0  # grows with every change of the book
        self._orders_seen = -1
        # What the planner reads of the book, as small numbers: each open order's level,
        # side, price and amount, and each level's holding when positive (see _step).
        self._interned: dict[tuple[object, ...], int] = {}
        self._open_keys: dict[str, int] = {}  # client id -> its interned order
        self._held_keys: dict[int, int] = {}  # level index -> its interned holding
        self._cid_by_key: dict[int, str] = {}  # interned open order -> its client id
        # The book as the memo knows it: sums of a random 64-bit number per interned open
        # order and per interned holding (Zobrist hashing, seeded: the same in every run).
        self._random = random.Random(_ZOBRIST_SEED)
        self._zobrist: list[int] = []  # interned key -> its random number
        self._orders_hash = self._held_hash = 0
        self._quiet_version = -1
        self._books: dict[tuple[int, int, int, int], _BookMemo] = {}
        self._memo = _BookMemo()  # the answers for the book as it is now
        self._remember_quiet = remember_quiet

    def _clock(self) -> float:
        return self.now

    # -- one event --------------------------------------------------------------------

    def event(self, ticks: int, ts: float) -> None:
        """The price is ``ticks`` at ``ts``: fill, record, plan, act; thresholds after."""
        self.now = ts
        price = Decimal(ticks) * self.tick
        if self.events is not None:
            self.events.append((ts, price))
        filled = False
        self.price = price
        if ticks <= self.best_buy or ticks >= self.best_sell:
            filled = self._sync_engine()
        if not self.down_at < ticks < self.up_next:
            self._locate(ticks)
        for _ in range(MAX_REPLANS):
            if not self._step(ticks, price):
                break
            filled = True
        if filled:
            self._position()
        if self._orders_seen != self.version:
            self._orders_seen = self.version
            self._order_thresholds()
        # strictly between: no event (through: an order's own price fills nothing)
        self.quiet_low = max(self.down_at, self.best_buy - self._beyond)
        self.quiet_high = min(self.up_next, self.best_sell + self._beyond)

    def _step(self, ticks: int, price: Decimal) -> bool:
        """Plan at ``price`` (``ticks``) and act; whether an order filled at once.

        The planner's answers are remembered per book as the planner reads it: each open
        order's level, side, price and amount, and each level's holding when positive - not
        the client ids, which only a cancel carries (a remembered cancel is sent with the id
        of the open order it named by level, side, price and amount). A book comes back
        often: a level bought and sold again holds and offers what it did before, under the
        next cycle's client ids. A book is known by its counts of open orders and holdings
        and two 64-bit sums of a seeded random number per interned order and holding
        (Zobrist hashing, kept up to date on every update): for two books of a run to be
        taken for one, 128 bits would have to collide, which among a million books happens
        with a probability below 1e-26. For a book, the planner is not asked again:

        - at the same price: it would answer the same (its cancels aside, as said);
        - at a level where it did nothing: it would say the same at any price above that
          level and not above the next one (its skipped levels are counted as if it were).
          So is a plan whose orders were all accepted and none filled at once, when it
          cancelled only outside the window: asked again at that level it would do nothing
          and skip the same levels for the same reasons. A skipped level is still free; a
          level held back by ``max_position`` still is, the exposure having only grown by
          what was placed; a buy cancelled outside the window frees a level outside it; a
          sell cancelled past ``sell_window + cancel_hysteresis`` leaves a level past the
          sell window. Not remembered so: a plan that cancelled a buy out of range (its
          level may be inside the window) or any buy under ``max_position`` (the exposure
          fell).
        """
        remember = self._remember_quiet
        if self._quiet_version != self.version:
            self._memo = self._memo_of_book() if remember else _BookMemo()
        memo = self._memo
        known = memo.quiet.get(self.base)
        if known is not None:
            if known[0]:
                self.skipped.update(known[0])
            self.capped = known[1]
            return False
        # Cancels are named by order: with two open orders alike, no answer at a price.
        exact = len(self._cid_by_key) == len(self._open_keys)
        answer = memo.plans.get(ticks) if exact else None
        if answer is None:
            book = self.book
            result = plan(book.spec, book.rules, book.state, price, book.open_orders())
            skipped: Counter[str] = _NO_SKIPS
            if result.skipped:
                skipped = Counter(skip.reason for skip in result.skipped)
            if exact and remember and (result.cancels or result.places):
                named = tuple(self._open_keys[c.client_order_id] for c in result.cancels)
                memo.plans[ticks] = (result, named, skipped)
        else:
            result, named, skipped = answer
            if named:
                by_key = self._cid_by_key
                cancels = tuple(
                    CancelOrder(by_key[key], c.level, c.side, c.reason)
                    for c, key in zip(result.cancels, named, strict=True)
                )
                result = Plan(cancels, result.places, result.skipped)
        if skipped:
            self.skipped.update(skipped)
        self.capped = "position_cap" in skipped
        if not result.cancels and not result.places:
            if remember:
                memo.quiet[self.base] = (skipped, self.capped)
            return False
        filled, settled = self._act(result, price)
        if settled and remember:
            self._memo = self._memo_of_book()
            self._memo.quiet[self.base] = (skipped, self.capped)
        return filled

    def _memo_of_book(self) -> _BookMemo:
        """The answers remembered for the book as it is now."""
        self._quiet_version = self.version
        book = (self._orders_hash, self._held_hash, len(self._open_keys), len(self._held_keys))
        memo = self._books.get(book)
        if memo is None:
            if len(self._books) >= _BOOKS:
                self._books.clear()
            memo = self._books[book] = _BookMemo()
        return memo

    def _intern(self, key: tuple[object, ...]) -> int:
        number = self._interned.get(key)
        if number is None:
            number = self._interned[key] = len(self._interned)
            self._zobrist.append(self._random.getrandbits(64))
        return number

    def _set_order(self, cid: str, key: int | None) -> None:
        """The open order ``cid`` is now the interned ``key`` (``None``: not open)."""
        old = self._open_keys.pop(cid, None)
        if old is not None:
            self._orders_hash = (self._orders_hash - self._zobrist[old]) & _MASK
            if self._cid_by_key.get(old) == cid:
                del self._cid_by_key[old]
        if key is not None:
            self._open_keys[cid] = key
            self._cid_by_key[key] = cid
            self._orders_hash = (self._orders_hash + self._zobrist[key]) & _MASK

    def _set_holding(self, index: int, key: int | None) -> None:
        """Level ``index`` now holds the interned ``key`` (``None``: nothing)."""
        old = self._held_keys.pop(index, None)
        if old is not None:
            self._held_hash = (self._held_hash - self._zobrist[old]) & _MASK
        if key is not None:
            self._held_keys[index] = key
            self._held_hash = (self._held_hash + self._zobrist[key]) & _MASK

    def _act(self, result: Plan, price: Decimal) -> tuple[bool, bool]:
        """Send ``result``'s cancels and placements, record the answers; whether an order
        filled at once, and whether the book settled (only placements, all resting)."""
        # Act first, record after, as the trader does: the answers of one plan together.
        answers: list[OrderUpdate] = []
        for cancel in result.cancels:
            answers.append(OrderUpdate(self.engine.cancel(self.symbol, cancel.client_order_id)))
        capped = self.spec.max_position is not None
        settled = all(
            cancel.reason == "outside_window" and (cancel.side == "sell" or not capped)
            for cancel in result.cancels
        )
        if result.places and self._engine_price != price:
            # a marketable order fills at the last price: tell it first
            settled = not self._sync_engine() and settled
        levels = self.book.state.levels
        for place in result.places:
            level = levels.get(place.level)
            cycle = 0 if level is None else level.cycle
            cid = client_order_id(self.tag, place.level, place.side, cycle)
            request = OrderRequest(self.symbol, place.side, place.price, place.amount, cid)
            try:
                answers.append(self.engine.submit(request))
            except OrderRejected:
                self.rejected += 1
                settled = False
        filled = False
        for update in answers:
            order = update.order
            if order.is_open:
                cid = order.client_order_id
                if order.side == "buy":
                    self.buy_ticks[cid] = self._ticks(order.price)
                    self.buy_quote[cid] = float(order.price * order.amount)
                else:
                    self.sell_ticks[cid] = self._ticks(order.price)
            self._apply(update)
            filled = filled or bool(update.fills)
        return filled, settled and not filled

    def _sync_engine(self) -> bool:
        """The engine learns the price and fills what it reached; whether anything filled.

        Only needed when the price reaches an order, or before an order is placed (a
        marketable one fills at the last price): in between, the engine would fill nothing.
        """
        self._engine_price = self.price
        filled = False
        for update in self.engine.on_price(self.symbol, self.price):
            self._apply(update)
            filled = True
        return filled

    def _apply(self, update: OrderUpdate) -> None:
        self.version += 1
        if not update.order.is_open:
            cid = update.order.client_order_id
            self.buy_ticks.pop(cid, None)
            self.buy_quote.pop(cid, None)
            self.sell_ticks.pop(cid, None)
        effect = self.book.effect(update, self.now)
        if effect is None:
            return
        before = self.book.state.level(effect.level.index)
        self.book.commit(effect)
        cid, opened, level = effect.client_order_id, effect.open_order, effect.level
        if opened is not None:
            self._set_order(
                cid, self._intern((opened.level, opened.side, opened.price, opened.amount))
            )
        elif cid in self._open_keys:
            self._set_order(cid, None)
        if level.holding > 0:
            self._set_holding(level.index, self._intern((level.index, level.holding)))
        elif level.index in self._held_keys:
            self._set_holding(level.index, None)
        self._holding += effect.level.holding - before.holding
        self._cost += effect.level.cost - before.cost
        self.round_trips.extend(effect.round_trips)

    def _ticks(self, price: Decimal) -> int:
        return int((price / self.tick).to_integral_value(rounding=ROUND_FLOOR))

    def _position(self) -> None:
        """Inventory and its cost from the ledger (kept as sums of level changes)."""
        self.inventory = float(self._holding)
        self.peak_inventory = max(self.peak_inventory, self.inventory)
        self.cost = float(self._cost)
        self.realized = float(self.book.realized_pnl)

    def _band(self, base: int) -> tuple[int, int]:
        """Level ``base``'s band in ticks: the price is above ``base`` and at most ``base + 1``
        while ``down_at < ticks < up_next``."""
        band = self._bands.get(base)
        if band is None:
            below = level_price(self.spec, base) / self.tick
            above = level_price(self.spec, base + 1) / self.tick
            band = (
                int(below.to_integral_value(rounding=ROUND_FLOOR)),
                int(above.to_integral_value(rounding=ROUND_FLOOR)) + 1,
            )
            self._bands[base] = band
        return band

    def _locate(self, ticks: int) -> None:
        """The level below the price, and the band of ticks it holds for."""
        base = self.base
        down_at, up_next = self._band(base)
        while ticks <= down_at:  # exact: the bands are level_price's own, level by level
            base -= 1
            down_at, up_next = self._band(base)
        while ticks >= up_next:
            base += 1
            down_at, up_next = self._band(base)
        self.base, self.down_at, self.up_next = base, down_at, up_next

    def _order_thresholds(self) -> None:
        """The best open buy and sell, in ticks, and the capital the grid uses."""
        self.best_buy = max(self.buy_ticks.values(), default=_NONE_BELOW)
        self.best_sell = min(self.sell_ticks.values(), default=_NONE_ABOVE)
        open_quote = 0.0
        for quote in self.buy_quote.values():  # in the order the buys were placed
            open_quote += quote
        self.capital = self.cost + open_quote
        self.peak_capital = max(self.peak_capital, self.capital)

    # -- a segment of the path ----------------------------------------------------------

    def walk(self, start: int, end: int, ts: float) -> None:
        """The price moves from ``start`` to ``end`` (ticks): an event at every threshold."""
        current = start
        if end < current:
            while True:
                nxt = self.quiet_low
                if nxt < end or nxt >= current:
                    return
                self.event(nxt, ts)
                current = nxt
        elif end > current:
            while True:
                nxt = self.quiet_high
                if nxt > end or nxt <= current:
                    return
                self.event(nxt, ts)
                current = nxt


def _check_spacing(spec: GridSpec, rules: MarketRules) -> None:
    step = spec.interval if spec.spacing == "arithmetic" else spec.anchor * spec.interval
    if step < rules.tick_size:
        raise ResearchError(
            f"{spec.symbol}: the grid step {step.normalize():f} is finer than the market's "
            f"price tick {rules.tick_size.normalize():f}; use a step of at least one tick"
        )


def run_symbol(
    setup: SymbolSetup,
    candles: Candles,
    timeframe_ms: int,
    model: PathModel = "nearer",
    *,
    trace: bool = False,
    progress: Callable[[int], None] | None = None,
    remember_quiet: bool = True,
    fill: FillRule = "touch",
) -> RunRecord:
    """Run ``setup``'s grid over ``candles`` (time order); ``trace`` keeps every event.

    ``fill`` is the matching engine's rule: ``touch`` fills a resting order when the path
    reaches its price, ``through`` one tick beyond it. ``remember_quiet=False`` asks the planner at every event, even where it said nothing
    at the same level before or where the book settled after its last plan there (slower,
    same result: tests check that).
    """
    n = len(candles)
    if n == 0:
        raise ResearchError(f"{setup.rules.symbol}: no candles in the chosen period")
    tick = setup.rules.tick_size
    inv = 1 / float(tick)
    ts_list, opens, highs, lows, closes = (
        candles.ts,
        candles.open,
        candles.high,
        candles.low,
        candles.close,
    )
    first = max(round(opens[0] * inv), 1)
    anchor = setup.params.anchor_price
    start = floor_to(Decimal(first) * tick, tick) if anchor is None else anchor
    run = _Run(setup, start, trace, remember_quiet, fill)
    span = timeframe_ms / 1000
    t0, t1, t2, t3 = (span * f for f in VERTEX_TIMES)
    run.event(first, ts_list[0] / 1000)
    every = max(1, math.ceil(n / CURVE_POINTS))
    curve = Curve()
    peak_eq = max_dd = 0.0
    capped_candles = 0
    below = False  # total PnL below zero at the last close
    recovered: float | None = None  # close time at which the last stretch below zero ended
    previous = first
    walk = run.walk
    for i in range(n):
        low = round(lows[i] * inv)
        high = round(highs[i] * inv)
        close = round(closes[i] * inv)
        if not (run.quiet_low < low and high < run.quiet_high):
            ts = ts_list[i] / 1000
            open_ = round(opens[i] * inv)
            first_x, second_x = (
                (high, low) if high_first(model, opens[i], highs[i], lows[i]) else (low, high)
            )
            walk(previous, open_, ts + t0)
            walk(open_, first_x, ts + t1)
            walk(first_x, second_x, ts + t2)
            walk(second_x, close, ts + t3)
        previous = close
        equity = run.realized + run.inventory * closes[i] - run.cost
        if equity > peak_eq:
            peak_eq = equity
        elif peak_eq - equity > max_dd:
            max_dd = peak_eq - equity
        if equity < 0:
            below, recovered = True, None
        elif below:
            below, recovered = False, ts_list[i] / 1000 + span
        if run.capped:
            capped_candles += 1
        if i % every == 0 or i == n - 1:
            curve.ts.append(ts_list[i] / 1000 + span)
            curve.price.append(closes[i])
            curve.equity.append(equity)
            curve.inventory.append(run.inventory)
            if progress is not None:
                progress(i + 1)
    return record_of(
        run,
        setup,
        rows=n,
        start=ts_list[0] / 1000,
        end=ts_list[-1] / 1000 + span,
        first=first,
        last=previous,
        curve=curve,
        max_drawdown=max_dd,
        capped=capped_candles,
        went_below=below or recovered is not None,
        recovered_at=recovered,
        source="candles",
    )


def record_of(
    run: _Run,
    setup: SymbolSetup,
    *,
    rows: int,
    start: float,
    end: float,
    first: int,
    last: int,
    curve: Curve,
    max_drawdown: float,
    capped: int,
    went_below: bool,
    recovered_at: float | None,
    source: str,
) -> RunRecord:
    """What ``run`` produced over ``rows`` candles or prints (``first``/``last``: prices in
    ticks)."""
    tick = setup.rules.tick_size
    holding = sum((lv.holding for lv in run.book.state.levels.values()), Decimal(0))
    cost = sum((lv.cost for lv in run.book.state.levels.values()), Decimal(0))
    return RunRecord(
        setup=setup,
        spec=run.spec,
        tag=run.tag,
        candles=rows,
        start=start,
        end=end,
        first_price=Decimal(first) * tick,
        last_price=Decimal(last) * tick,
        orders=run.engine.all_orders(),
        fills=run.engine.fills(),
        round_trips=run.round_trips,
        skipped=run.skipped,
        rejected=run.rejected,
        inventory=holding,
        inventory_cost=cost,
        realized=run.book.realized_pnl,
        curve=curve,
        max_drawdown=max_drawdown,
        peak_inventory=run.peak_inventory,
        peak_capital=run.peak_capital,
        capped_candles=capped,
        went_below=went_below,
        recovered_at=recovered_at,
        events=run.events,
        source=source,
        fill=run.fill,
    )
