"""The ``Exchange`` protocol every exchange implementation follows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from quantmesh.domain import (
    ClockOffset,
    Fill,
    MarketRules,
    Order,
    OrderRequest,
    OrderUpdate,
    Tick,
)


class Exchange(Protocol):
    """A spot exchange, as the trader sees it.

    Errors are ``quantmesh.errors.ExchangeError`` subclasses: ``MarketNotFound``,
    ``DuplicateOrder`` (an open order has the same client order id), ``InsufficientFunds``,
    ``InvalidOrder``, ``OrderNotFound``, ``Disconnected``, ``RateLimited``.
    """

    @property
    def name(self) -> str:
        """Exchange id used in lock keys and database rows (``simulated``, ``binance``)."""
        ...

    async def start(self) -> None:
        """Connect and start background work (price feeds, streams)."""
        ...

    async def close(self) -> None:
        """Stop background work and release connections; idempotent."""
        ...

    async def market(self, symbol: str) -> MarketRules:
        """The trading rules of ``symbol``; raises ``MarketNotFound``."""
        ...

    def watch_ticks(self, symbol: str) -> AsyncIterator[Tick]:
        """Price updates for ``symbol``, newest first available, until closed."""
        ...

    def watch_orders(self, symbol: str) -> AsyncIterator[OrderUpdate]:
        """Updates (fills, cancels) of orders on ``symbol``."""
        ...

    async def create_order(self, request: OrderRequest) -> Order:
        """Place a limit order.

        With ``request.expires_at`` set, the request carries an expiry the exchange
        enforces, ending before that ``time.monotonic()`` value less the clock's uncertainty;
        ``RequestExpired`` when the exchange refused it as expired or too little time was
        left to send it (either way it was not placed).
        """
        ...

    async def cancel_order(
        self, symbol: str, client_order_id: str, expires_at: float | None = None
    ) -> Order:
        """Cancel an open order; returns its final state (it may have filled meanwhile).

        ``expires_at`` as for ``create_order``: ``RequestExpired`` means not cancelled.
        """
        ...

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order:
        """The current state of an order; raises ``OrderNotFound``."""
        ...

    async def fetch_order_fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        """Every fill of the order (for reconciliation after a restart)."""
        ...

    async def fetch_orders_since(self, symbol: str, since: float) -> list[Order]:
        """Every order on ``symbol`` placed at or after ``since`` (epoch seconds), any state.

        Reconciliation uses it to find orders placed just before a crash and never recorded.
        """
        ...

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        """Every open order on ``symbol``, ours or not."""
        ...

    def clock_offset(self) -> ClockOffset | None:
        """The exchange's clock against ours, as last measured; ``None`` for an exchange
        that shares this process's clock (the in-process simulator) or before the first
        measurement."""
        ...

    def stream_reconnects(self) -> Mapping[tuple[str, str], int]:
        """Stream failures followed by a reconnect (or REST polling) so far, by (symbol,
        ``prices`` | ``orders``); empty for an exchange without streams to lose."""
        ...

    def price_health(self) -> PriceHealth | None:
        """How fresh its prices are, for an exchange whose prices can stop silently;
        ``None`` for one whose prices cannot go stale (the in-process simulator)."""
        ...


class PriceHealth(Protocol):
    """An exchange whose prices can stop silently (a stalled stream, REST polling failing).

    The trader pauses a symbol, and reports it not ready, while ``price_fresh`` is False;
    exchanges without it (``Exchange.price_health`` is None) are always fresh.
    """

    @property
    def price_stale_after(self) -> float:
        """Seconds without a price after which a symbol is stale."""
        ...

    def price_age(self, symbol: str) -> float | None:
        """Seconds since the last price of ``symbol`` arrived (monotonic); None before one."""
        ...

    def price_fresh(self, symbol: str) -> bool:
        """A price of ``symbol`` arrived within ``price_stale_after`` seconds."""
        ...
