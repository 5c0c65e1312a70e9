"""``PaperExchange``: the ``Exchange`` protocol on a real venue's public data, with our own
orders matched by us.

- Prices, market rules and freshness come from a ccxt adapter (``CcxtExchange``) that
  holds no keys: ``watch_ticker`` with ``fetch_ticker`` behind it, ``load_markets``.
- Orders never reach the venue: the ``PaperAccount`` matches them against the venue's
  public trades (``TradeLoop``), with the venue's maker and taker fees for each market.
- The account persists like the simulated exchange's, so balances, open orders and fills
  survive a restart; client order ids are the trader's own, refused while one is open.

Trading the same config live is changing ``exchange.name`` to the venue and adding keys.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.domain import ClockOffset, Fill, MarketRules, Order, OrderRequest, OrderUpdate, Tick
from quantmesh.errors import Disconnected, ExchangeError, RequestExpired
from quantmesh.exchange.base import PriceHealth
from quantmesh.exchange.ccxt.convert import dec
from quantmesh.exchange.ccxt.errors import translate
from quantmesh.exchange.ccxt.exchange import CcxtExchange
from quantmesh.exchange.ccxt.streams import StreamSettings
from quantmesh.exchange.paper.account import PaperAccount
from quantmesh.exchange.paper.trades import Print, TradeLoop
from quantmesh.exchange.sim.matching import Fees

log = structlog.get_logger(__name__)

NAME = "paper"
_DEFAULT_FEE = Decimal("0.001")  # a market whose fees ccxt does not know


class PaperExchange:
    """An ``Exchange`` whose orders are matched here against ``venue``'s public trades."""

    def __init__(
        self,
        venue: CcxtExchange,
        account: PaperAccount,
        stream: StreamSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._venue = venue
        self._account = account
        self._stream = stream
        self._timing: dict[str, Any] = {"clock": clock, "sleep": sleep, "rng": rng}
        self._wall = wall
        self._state: Literal["new", "running", "closed"] = "new"
        self._trades: dict[str, TradeLoop] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return NAME

    @property
    def source(self) -> str:
        """The ccxt id of the venue whose prices and trades are used."""
        return self._venue.name

    @property
    def account(self) -> PaperAccount:
        """The paper account, for inspection (tests)."""
        return self._account

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the venue's markets, restore the account, follow the trades of every
        symbol that has open orders."""
        if self._state != "new":
            raise RuntimeError(f"paper exchange cannot start when {self._state}")
        await self._venue.start()
        try:
            self._account.open()
        except BaseException:
            await self._venue.close()
            self._state = "closed"
            raise
        self._state = "running"
        for symbol in self._account.symbols_with_open_orders():
            try:
                await self.market(symbol)
            except ExchangeError as exc:  # delisted since: its orders stay as they are
                log.warning("paper_market_unavailable", symbol=symbol, error=str(exc))
        log.info("paper_exchange_started", source=self.source)

    async def close(self) -> None:
        """Stop the trade loops, close the venue's client and the account; idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        try:
            await cancel_and_wait(*self._tasks)
            self._tasks.clear()
            await self._venue.close()
        finally:
            self._account.close()
        log.info("paper_exchange_closed", source=self.source)

    # -- Exchange protocol --------------------------------------------------------------

    async def market(self, symbol: str) -> MarketRules:
        """The venue's rules of ``symbol``; from the first call on its trades are followed
        and its orders matched."""
        self._check_running()
        rules = await self._venue.market(symbol)
        if not self._account.has_market(symbol):
            self._account.add_market(rules, self._fees(symbol))
        if symbol not in self._trades:
            self._follow(symbol)
        return rules

    def watch_ticks(self, symbol: str) -> AsyncIterator[Tick]:
        return self._venue.watch_ticks(symbol)

    def watch_orders(self, symbol: str) -> AsyncIterator[OrderUpdate]:
        """Fills and cancels of our orders on ``symbol``."""
        subscription = self._account.subscribe(symbol)
        if self._state == "closed":
            subscription.end()
        return subscription

    async def create_order(self, request: OrderRequest) -> Order:
        await self.market(request.symbol)
        _check_expiry(request.expires_at, request.client_order_id)
        order = self._account.submit(request)
        log.debug(
            "paper_order_placed",
            symbol=request.symbol,
            side=request.side,
            price=str(request.price),
            amount=str(request.amount),
            client_order_id=request.client_order_id,
            status=order.status,
        )
        return order

    async def cancel_order(
        self, symbol: str, client_order_id: str, expires_at: float | None = None
    ) -> Order:
        await self.market(symbol)
        _check_expiry(expires_at, client_order_id)
        return self._account.cancel(symbol, client_order_id)

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order:
        await self.market(symbol)
        return self._account.get(symbol, client_order_id)

    async def fetch_order_fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        await self.market(symbol)
        return self._account.fills(symbol, client_order_id)

    async def fetch_orders_since(self, symbol: str, since: float) -> list[Order]:
        await self.market(symbol)
        return self._account.orders_since(symbol, since)

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        await self.market(symbol)
        return self._account.open_orders(symbol)

    def clock_offset(self) -> ClockOffset | None:
        return None  # orders are matched here, on this process's clock

    def stream_reconnects(self) -> Mapping[tuple[str, str], int]:
        """The venue's price streams, and the trade stream of each symbol (``trades``)."""
        counts = dict(self._venue.stream_reconnects())
        counts.update({(s, "trades"): loop.reconnects for s, loop in self._trades.items()})
        return counts

    def price_health(self) -> PriceHealth | None:
        return self._venue.price_health()

    # -- internals ----------------------------------------------------------------------

    def _fees(self, symbol: str) -> Fees:
        """The venue's maker and taker rates of ``symbol`` as ccxt knows them."""
        market = self._venue.client.markets.get(symbol) or {}
        return Fees(
            maker=dec(market.get("maker"), _DEFAULT_FEE),
            taker=dec(market.get("taker"), _DEFAULT_FEE),
        )

    def _follow(self, symbol: str) -> None:
        loop = TradeLoop(
            symbol,
            self._venue.client,
            self._stream,
            fetch_trades=self._fetch_trades,
            on_prints=lambda prints: self._on_prints(symbol, prints),
            wall=self._wall,
            **self._timing,
        )
        self._trades[symbol] = loop
        task = asyncio.create_task(loop.run(), name=f"paper-trades-{symbol}")
        self._tasks.add(task)
        task.add_done_callback(self._loop_done)

    async def _fetch_trades(self, symbol: str, since_ms: int) -> list[dict[str, Any]]:
        """One page of the venue's public trades from ``since_ms`` (the loop retries)."""
        try:
            trades: list[dict[str, Any]] = await self._venue.client.fetch_trades(symbol, since_ms)
        except Exception as exc:
            raise translate(exc, symbol=symbol, exchange=self.source) from exc
        return trades

    def _on_prints(self, symbol: str, prints: list[Print]) -> None:
        for _, price in prints:
            try:
                self._account.on_trade(symbol, price)
            except Disconnected:  # not saved: nothing published; the next save carries it
                return

    def _check_running(self) -> None:
        if self._state != "running":
            raise Disconnected(f"paper exchange is {self._state}, not running")

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("exchange_loop_failed", task=task.get_name(), exc_info=task.exception())


def _check_expiry(expires_at: float | None, client_order_id: str) -> None:
    """Refuse a request past its expiry, as the venue would."""
    if expires_at is not None and time.monotonic() > expires_at:
        raise RequestExpired(f"request for {client_order_id} arrived after its expiry")
