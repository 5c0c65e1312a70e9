"""The trader's view of its own grid: open orders, level state, sell progress.

Order updates are turned into an ``Effect`` first (pure: nothing changes), the effect is
stored, and only then committed to memory - so a failed write leaves the book as the
database has it, and the next reconciliation applies the update again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from quantmesh.domain import Fill, MarketRules, Order, OrderRequest, OrderUpdate
from quantmesh.grid.ids import parse_client_order_id
from quantmesh.grid.ledger import (
    SellProgress,
    apply_buy_fill,
    apply_sell_fill,
    close_buy,
    close_sell,
)
from quantmesh.grid.planner import OpenOrder
from quantmesh.grid.pnl import Position, day_of, position
from quantmesh.grid.state import GridSpec, GridState, LevelState, RoundTrip

_SEEN_FILLS = 10_000  # trade ids remembered to drop a repeated fill without a query


@dataclass(frozen=True, slots=True)
class Effect:
    """What one order update does to the book, before it is committed."""

    client_order_id: str
    exchange_order_id: str
    open_order: OpenOrder | None  # the order while still open; None once closed
    level: LevelState
    progress: SellProgress | None  # new sell progress of the level, if it changed
    fills: tuple[Fill, ...]
    round_trips: tuple[RoundTrip, ...]

    @property
    def levels(self) -> tuple[LevelState, ...]:
        return (self.level,)


class OrderBook:
    def __init__(self, spec: GridSpec, rules: MarketRules, state: GridState, tag: str) -> None:
        self.spec = spec
        self.rules = rules
        self.state = state
        self.tag = tag
        self.realized_pnl = Decimal(0)
        self.realized_days: dict[str, Decimal] = {}  # by UTC day of the round trip's close
        self.fees: dict[str, Decimal] = {}  # fees of the fills applied, by currency
        self._open: dict[str, OpenOrder] = {}
        self._open_xid: dict[str, str] = {}  # client order id -> exchange id of the open order
        self._unknown: dict[str, OpenOrder] = {}
        self._progress: dict[int, SellProgress] = {}
        self._closed: dict[str, str] = {}  # client order id -> exchange id it closed with
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()

    # queries ------------------------------------------------------------------------------

    def is_ours(self, client_order_id: str) -> bool:
        key = parse_client_order_id(client_order_id)
        return key is not None and key.tag == self.tag

    def open_orders(self) -> list[OpenOrder]:
        """Open orders plus those whose placement outcome is unknown (treated as open)."""
        if not self._unknown:
            return list(self._open.values())
        return [*self._open.values(), *self._unknown.values()]

    def get(self, client_order_id: str) -> OpenOrder | None:
        return self._open.get(client_order_id) or self._unknown.get(client_order_id)

    def is_earlier(self, order: Order) -> bool:
        """Whether ``order`` is an earlier, closed order that used the same client id (a buy
        cancelled unfilled is placed again with its id): not news of the current one."""
        closed = self._closed.get(order.client_order_id)
        return bool(order.exchange_order_id) and closed == order.exchange_order_id

    def is_stale(self, order: Order) -> bool:
        """An open buy of a cycle its level has already finished, not followed by this book:
        a former owner of the symbol froze while sending it, and it landed after this book
        moved on. Adopting it would buy the level twice."""
        key = parse_client_order_id(order.client_order_id)
        if key is None or key.tag != self.tag or key.side != "buy" or not order.is_open:
            return False
        return not self.tracks(order) and key.cycle < self.state.level(key.level).cycle

    def tracks(self, order: Order) -> bool:
        """Whether this book has followed ``order`` as open since it was placed or adopted.

        Every fill of such an order that this process applied is remembered, so its fills
        need no database check.
        """
        return self._open_xid.get(order.client_order_id) == order.exchange_order_id

    def unknown_ids(self) -> list[str]:
        return list(self._unknown)

    def inventory(self) -> Decimal:
        return sum((lvl.holding for lvl in self.state.levels.values()), Decimal(0))

    def holding_levels(self) -> list[LevelState]:
        return [lvl for lvl in self.state.levels.values() if lvl.holding > 0]

    def position(self, price: Decimal) -> Position:
        """Inventory, its cost and average cost, and the unrealized PnL at ``price``."""
        return position(self.state.levels.values(), self._progress, price)

    # changes ---------------------------------------------------------------------------------

    def track_unknown(self, request: OrderRequest) -> None:
        """An order whose state is unknown: block its level until a lookup settles it."""
        key = parse_client_order_id(request.client_order_id)
        if key is None:
            return
        self.forget(request.client_order_id)
        self._unknown[request.client_order_id] = OpenOrder(
            request.client_order_id, key.level, request.side, request.price, request.amount
        )

    def forget(self, client_order_id: str) -> None:
        self._unknown.pop(client_order_id, None)
        self._open.pop(client_order_id, None)
        self._open_xid.pop(client_order_id, None)

    def set_progress(self, level: int, progress: SellProgress) -> None:
        """Sell progress rebuilt from stored fills after a restart."""
        self._progress[level] = progress

    def effect(self, update: OrderUpdate, now: float) -> Effect | None:
        """What ``update`` does; ``None`` for a foreign order or a stale update."""
        order = update.order
        key = parse_client_order_id(order.client_order_id)
        if key is None or key.tag != self.tag:
            return None
        cid = order.client_order_id
        if order.is_open and self._closed.get(cid) == order.exchange_order_id:
            return None  # a late "open" for an order we already saw closed
        tracked = self._open_xid.get(cid)
        # News of an earlier order with the id of the one we track: its fills count, its
        # status does not replace the tracked order's.
        earlier = tracked is not None and tracked != order.exchange_order_id
        level = self.state.level(key.level)
        progress = self._progress.get(key.level) if key.side == "sell" else None
        fills = tuple(f for f in update.fills if f.trade_id not in self._seen)
        for fill in fills:
            if key.side == "buy":
                level = apply_buy_fill(
                    level, fill.amount, fill.price, fill.fee, fill.fee_currency, self.rules
                )
            else:
                level, progress = apply_sell_fill(
                    level,
                    progress or SellProgress(),
                    fill.amount,
                    fill.price,
                    fill.fee,
                    fill.fee_currency,
                    self.rules,
                )
        trips: tuple[RoundTrip, ...] = ()
        open_order = None
        if earlier:
            if not fills:
                return None  # nothing new: a late status of a replaced order
            open_order = self._open[cid]
        elif order.is_open:
            open_order = OpenOrder(cid, key.level, key.side, order.price, order.amount)
        elif key.cycle == level.cycle:
            if key.side == "buy":
                if order.filled > 0:  # a buy cancelled before any fill completes nothing
                    level = close_buy(level)
            elif progress is not None:
                outcome = close_sell(level, progress, self.rules, symbol=self.spec.symbol, ts=now)
                level, progress = outcome.level, outcome.progress
                if outcome.round_trip is not None:
                    trips = (outcome.round_trip,)
        xid = tracked if earlier and tracked is not None else order.exchange_order_id
        return Effect(cid, xid, open_order, level, progress, fills, trips)

    def commit(self, effect: Effect) -> None:
        """Apply an effect that has been stored."""
        cid = effect.client_order_id
        self._unknown.pop(cid, None)
        if effect.open_order is not None:
            self._open[cid] = effect.open_order
            self._open_xid[cid] = effect.exchange_order_id
        else:
            self._open.pop(cid, None)
            self._open_xid.pop(cid, None)
            self._closed[cid] = effect.exchange_order_id
            if len(self._closed) > _SEEN_FILLS:
                del self._closed[next(iter(self._closed))]
        self.state.set_level(effect.level)
        if effect.progress is not None:
            if effect.progress.amount > 0:
                self._progress[effect.level.index] = effect.progress
            else:
                self._progress.pop(effect.level.index, None)
        for trip in effect.round_trips:
            self.realized_pnl += trip.pnl
            day = day_of(trip.closed_at)
            self.realized_days[day] = self.realized_days.get(day, Decimal(0)) + trip.pnl
        for fill in effect.fills:
            self._remember(fill.trade_id)
            if fill.fee:
                self.fees[fill.fee_currency] = (
                    self.fees.get(fill.fee_currency, Decimal(0)) + fill.fee
                )

    def remember_stored(self, trade_ids: Iterable[str]) -> None:
        """Fills found already stored (applied by an earlier process): never apply them again,
        even when a later update of the same order repeats them."""
        for trade_id in trade_ids:
            if trade_id not in self._seen:
                self._remember(trade_id)

    def _remember(self, trade_id: str) -> None:
        self._seen.add(trade_id)
        self._seen_order.append(trade_id)
        if len(self._seen_order) > _SEEN_FILLS:
            self._seen.discard(self._seen_order.popleft())
