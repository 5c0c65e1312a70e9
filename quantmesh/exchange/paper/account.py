"""The paper account: our orders and balances, matched against public trades, persisted.

The simulator's ``MatchingEngine`` keeps the orders, balances and fills; its ``SimStore``
keeps them in a state file. Every change is persisted before its result is returned or
published (as in ``SimulatedExchange``), so a restart from the same file never brings a
filled order back as open nor loses a fill a caller has seen. Synchronous: the exchange
around it does the I/O with the venue.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path

import structlog

from quantmesh.domain import Fill, MarketRules, Order, OrderRequest, OrderUpdate
from quantmesh.errors import Disconnected, StartupError
from quantmesh.exchange.fanout import Subscribers, Subscription
from quantmesh.exchange.sim.matching import Balance, Fees, FillRule, MatchingEngine
from quantmesh.exchange.sim.store import SimStore

log = structlog.get_logger(__name__)


class PaperAccount:
    """A ``MatchingEngine`` persisted to ``state_path`` (None: in memory), publishing every
    fill and cancel to the subscribers of its symbol once persisted."""

    def __init__(
        self,
        balances: Mapping[str, Decimal],
        state_path: Path | None,
        fill_rule: FillRule = "through",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = MatchingEngine({}, balances, Decimal(0), clock, fill_rule=fill_rule)
        self._state_path = state_path
        self._store: SimStore | None = None
        self._subs: dict[str, Subscribers[OrderUpdate]] = {}
        self._dirty: dict[str, None] = {}  # ids of orders changed since the last save
        self._pending: list[OrderUpdate] = []  # published after the next save

    @property
    def engine(self) -> MatchingEngine:
        """The matching engine, for inspection (tests); do not mutate it."""
        return self._engine

    def open(self) -> None:
        """Restore the state file, if any; ``StartupError`` when it cannot be used."""
        if self._state_path is None:
            return
        self._store = SimStore(self._state_path)
        try:
            snapshot = self._store.load()
            if snapshot is not None:
                self._engine.restore(snapshot)
        except (sqlite3.Error, ValueError) as exc:
            self.close()
            raise StartupError(
                f"paper exchange state {self._state_path} cannot be restored: {exc}"
            ) from exc
        orders = self._engine.all_orders()
        log.info(
            "paper_state_restored",
            state_path=str(self._state_path),
            orders=len(orders),
            open_orders=sum(o.is_open for o in orders),
        )

    def close(self) -> None:
        """Close the state file and end every subscription; idempotent."""
        if self._store is not None:
            self._store.close()
            self._store = None
        for subs in self._subs.values():
            subs.end_all()

    def subscribe(self, symbol: str) -> Subscription[OrderUpdate]:
        """Fills and cancels of orders on ``symbol`` (none is ever dropped)."""
        subscription = Subscription[OrderUpdate](self._subs.setdefault(symbol, Subscribers()), 0)
        subscription.register()
        return subscription

    def add_market(self, rules: MarketRules, fees: Fees) -> None:
        self._engine.add_market(rules, fees)

    def has_market(self, symbol: str) -> bool:
        return self._engine.has_market(symbol)

    def symbols_with_open_orders(self) -> list[str]:
        return sorted({o.symbol for o in self._engine.all_orders() if o.is_open})

    # -- commands -----------------------------------------------------------------------

    def submit(self, request: OrderRequest) -> Order:
        """Place a limit order (``MatchingEngine.submit``'s errors); a marketable one fills
        at once at the last trade price, at the taker rate."""
        update = self._engine.submit(request)
        self._dirty[update.order.exchange_order_id] = None
        if update.fills:
            self._pending.append(update)
        self._save()
        return update.order

    def cancel(self, symbol: str, client_order_id: str) -> Order:
        was_open = self._engine.get(symbol, client_order_id).is_open
        order = self._engine.cancel(symbol, client_order_id)
        if was_open:
            self._dirty[order.exchange_order_id] = None
            self._pending.append(OrderUpdate(order))
        self._save()
        return order

    def on_trade(self, symbol: str, price: Decimal) -> int:
        """A public trade printed at ``price``: fill every open order it crosses (at the
        order's price, maker rate); returns how many filled."""
        updates = self._engine.on_price(symbol, price)
        for update in updates:
            self._dirty[update.order.exchange_order_id] = None
            fill = update.fills[0]
            log.info(
                "paper_order_filled",
                symbol=symbol,
                side=fill.side,
                price=str(fill.price),
                amount=str(fill.amount),
                trade_price=str(price),
                client_order_id=fill.client_order_id,
            )
        self._pending.extend(updates)
        if updates:
            self._save()
        return len(updates)

    # -- queries ------------------------------------------------------------------------

    def get(self, symbol: str, client_order_id: str) -> Order:
        return self._engine.get(symbol, client_order_id)

    def fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        return self._engine.order_fills(symbol, client_order_id)

    def open_orders(self, symbol: str) -> list[Order]:
        return self._engine.open_orders(symbol)

    def orders_since(self, symbol: str, since: float) -> list[Order]:
        return [
            o for o in self._engine.all_orders() if o.symbol == symbol and o.created_at >= since
        ]

    def balances(self) -> dict[str, Balance]:
        return self._engine.balances()

    # -- persistence --------------------------------------------------------------------

    def _save(self) -> None:
        """Persist what changed, then publish the updates waiting for it; ``Disconnected``
        (nothing published) when the state file cannot be written."""
        if self._store is not None:
            try:
                orders = [self._engine.order_snapshot(i) for i in self._dirty]
                self._store.save(self._engine.snapshot_header(), orders)
            except sqlite3.Error as exc:
                log.error("paper_persist_failed", error=str(exc))
                raise Disconnected(f"paper exchange state cannot be saved: {exc}") from exc
        self._dirty.clear()
        pending, self._pending = self._pending, []
        for update in pending:
            subscribers = self._subs.get(update.order.symbol)
            if subscribers is not None:
                subscribers.publish(update)
