"""``CcxtExchange``: the ``Exchange`` protocol over any ccxt.pro exchange.

Order safety lives here, below the trader:

- a create is sent once, with the deterministic client order id in its params;
- when its outcome is unknown (timeout, connection lost, 5xx) the order is looked up by
  that id before anything else is decided, and the caller gets either the order or
  ``Disconnected`` (then the trader tracks it as unknown and looks it up again later) -
  never a second create;
- rejections are final and not retried.

A rate limit blocks every call until its ``Retry-After`` has passed: writes fail fast with
``RateLimited`` during the block (the trader pauses the symbol), reads wait. Reads are
retried with exponential backoff and jitter.

Creates and cancels sent with an ``expires_at`` carry an expiry the exchange enforces
(``expiry``): the exchange's clock is measured at start and every ``clock_interval``
seconds, and until it has been measured no such request is sent.

Only our own orders (client ids with the QuantMesh prefix) are remembered, and only while
open or recently closed (``OrderIds``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import ccxt
import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.domain import ClockOffset, Fill, MarketRules, Order, OrderRequest, OrderUpdate, Tick
from quantmesh.errors import (
    AuthenticationFailed,
    Disconnected,
    ExchangeError,
    MarketNotFound,
    OrderNotFound,
    RateLimited,
    RequestExpired,
    StartupError,
)
from quantmesh.exchange.backoff import Backoff
from quantmesh.exchange.ccxt.convert import market_rules, to_fill, to_order
from quantmesh.exchange.ccxt.errors import outcome_unknown, retry_after, translate
from quantmesh.exchange.ccxt.expiry import ExchangeClock, ExpiryMargins, RequestExpiry
from quantmesh.exchange.ccxt.ids import IdCodec, IdStyle, OrderIds
from quantmesh.exchange.ccxt.streams import OrderLoop, PriceLoop, StreamSettings
from quantmesh.exchange.fanout import Subscribers, Subscription
from quantmesh.grid.ids import PREFIX as _OUR_PREFIX

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
_DEFAULT_RETRY_AFTER = 1.0
_PAGE = 500


@dataclass(frozen=True, slots=True)
class CcxtSettings:
    """How the adapter talks to the exchange (seconds unless named otherwise)."""

    stream: StreamSettings = field(default_factory=StreamSettings)
    read_retries: int = 3  # extra attempts of a failed read (lookups, listings)
    startup_retries: int = 5  # extra attempts of each call made at start
    verify_credentials: bool = True  # a private call at start, so bad keys stop the daemon
    client_order_id_param: str = "clientOrderId"  # ccxt's unified create/fetch/cancel param
    client_order_id_style: IdStyle = "auto"  # see ids
    tick_queue_size: int = 16
    clock_interval: float = 60.0  # seconds between measurements of the exchange's clock
    clock_samples: int = 3  # readings at start; the one with the shortest round trip is kept
    expiry: ExpiryMargins = field(default_factory=ExpiryMargins)
    recent_ids: int = 1024  # exchange ids of closed orders kept for lookups


class CcxtExchange:
    """An ``Exchange`` backed by a ccxt.pro client (built by ``create_client``)."""

    def __init__(
        self,
        client: Any,
        settings: CcxtSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._settings = settings or CcxtSettings()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._state: Literal["new", "running", "closed"] = "new"
        self._rules: dict[str, MarketRules] = {}
        self._blocked_until = 0.0
        self._tick_subs: dict[str, Subscribers[Tick]] = {}
        self._order_subs: dict[str, Subscribers[OrderUpdate]] = {}
        self._prices: dict[str, PriceLoop] = {}
        self._orders: dict[str, OrderLoop] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = OrderIds(recent=self._settings.recent_ids)  # for lookups by exchange id
        self._codec = IdCodec(str(client.id), self._settings.client_order_id_style)
        expiry = self._settings.expiry
        self._exchange_clock = ExchangeClock(
            client,
            interval=self._settings.clock_interval,
            drift_ppm=expiry.drift_ppm,
            mono=clock,
            wall=wall,
        )
        self._expiry = RequestExpiry(client, self._exchange_clock, expiry, mono=clock)

    @property
    def name(self) -> str:
        return str(self._client.id)

    @property
    def client(self) -> Any:
        """The ccxt client, for inspection by tests."""
        return self._client

    def price_health(self) -> CcxtExchange:
        """This adapter reports how fresh its prices are (``price_age``, ``price_fresh``)."""
        return self

    def stream_reconnects(self) -> dict[tuple[str, str], int]:
        """Failed-and-retried streams so far, by (symbol, ``prices`` | ``orders``)."""
        out = {(symbol, "prices"): loop.reconnects for symbol, loop in self._prices.items()}
        out.update({(symbol, "orders"): loop.reconnects for symbol, loop in self._orders.items()})
        return out

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the markets and check the credentials; start streams already asked for."""
        if self._state != "new":
            raise RuntimeError(f"ccxt exchange cannot start when {self._state}")
        try:
            await self._start()
        except BaseException:
            await self._client.close()
            self._state = "closed"
            raise
        self._state = "running"
        if self._exchange_clock.available:
            self._spawn(self._exchange_clock.run(), "ccxt-clock")
        for symbol in {*self._tick_subs, *self._order_subs}:
            self._ensure_loops(symbol)
        log.info("exchange_connected", exchange=self.name, markets=len(self._client.markets))

    async def _start(self) -> None:
        verify = self._settings.verify_credentials
        if verify and not (self._client.apiKey and self._client.secret):
            raise AuthenticationFailed(
                f"{self.name} needs exchange.api_key and exchange.secret (set them, e.g. from "
                "environment variables); nothing was traded"
            )
        try:
            await self._read(
                "load_markets", self._client.load_markets, retries=self._settings.startup_retries
            )
        except AuthenticationFailed:
            raise
        except ExchangeError as exc:
            raise StartupError(f"{self.name}: the markets cannot be loaded: {exc}") from exc
        await self._start_clock()
        if not verify:
            return
        try:
            await self._read(
                "fetch_balance",
                self._client.fetch_balance,
                retries=self._settings.startup_retries,
            )
        except AuthenticationFailed as exc:
            raise AuthenticationFailed(
                f"{self.name} refused the API key ({exc}); check exchange.api_key, "
                "exchange.secret and the key's permissions and IP whitelist; nothing was traded"
            ) from exc
        except ExchangeError as exc:
            raise StartupError(f"{self.name}: the account cannot be read: {exc}") from exc

    async def _start_clock(self) -> None:
        """Measure the exchange's clock (before any signed call: ccxt's timestamps use it)
        and say once what requests to this exchange cannot be protected against."""
        if self._exchange_clock.available:
            await self._exchange_clock.measure(self._settings.clock_samples)
        if not self._expiry.enforced:
            log.warning(
                "request_expiry_unsupported",
                exchange=self.name,
                detail="creates and cancels carry no expiry this exchange enforces: one "
                "delayed past its lease (a frozen process, a slow network) may still execute",
            )
        elif not self._exchange_clock.available:
            log.error(
                "exchange_clock_unavailable",
                exchange=self.name,
                detail="the exchange's time cannot be read: creates and cancels with an "
                "expiry are not sent",
            )

    async def close(self) -> None:
        """Stop the loops, end every subscription, close the client; idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        for tick_subs in self._tick_subs.values():
            tick_subs.end_all()
        for order_subs in self._order_subs.values():
            order_subs.end_all()
        try:
            await self._client.close()
        except (ccxt.BaseError, OSError, RuntimeError) as exc:  # must not fail the shutdown
            log.warning("exchange_close_failed", error=str(exc))
        log.info("exchange_closed", exchange=self.name)

    # -- price freshness ----------------------------------------------------------------

    @property
    def price_stale_after(self) -> float:
        return self._settings.stream.price_stale_after

    def price_age(self, symbol: str) -> float | None:
        """Seconds since the last price of ``symbol`` arrived; None before the first."""
        loop = self._prices.get(symbol)
        if loop is None or loop.last_price_at is None:
            return None
        return self._clock() - loop.last_price_at

    def price_fresh(self, symbol: str) -> bool:
        """Whether a price of ``symbol`` arrived within ``price_stale_after`` seconds."""
        age = self.price_age(symbol)
        return age is not None and age <= self.price_stale_after

    # -- Exchange protocol --------------------------------------------------------------

    async def market(self, symbol: str) -> MarketRules:
        self._check_running()
        rules = self._rules.get(symbol)
        if rules is None:
            market = self._client.markets.get(symbol)
            if market is None or not market.get("spot", True):
                raise MarketNotFound(symbol)
            rules = market_rules(market, self._client.precisionMode)
            self._rules[symbol] = rules
        return rules

    def watch_ticks(self, symbol: str) -> AsyncIterator[Tick]:
        subs = self._tick_subs.setdefault(symbol, Subscribers())
        subscription = Subscription[Tick](subs, self._settings.tick_queue_size)
        return self._subscribe(symbol, subscription)

    def watch_orders(self, symbol: str) -> AsyncIterator[OrderUpdate]:
        subs = self._order_subs.setdefault(symbol, Subscribers())
        return self._subscribe(symbol, Subscription[OrderUpdate](subs, 0))

    async def create_order(self, request: OrderRequest) -> Order:
        self._check_running()
        self._check_not_blocked()
        params = {self._settings.client_order_id_param: self._codec.encode(request.client_order_id)}
        try:
            with self._expiry.bound(request.expires_at):
                raw = await self._client.create_order(
                    request.symbol,
                    "limit",
                    request.side,
                    f"{request.amount:f}",
                    f"{request.price:f}",
                    params,
                )
        except Exception as exc:
            error = self._translate(exc, request.symbol, request.client_order_id)
            if not outcome_unknown(error):
                raise error from exc
            log.warning(
                "order_create_outcome_unknown",
                client_order_id=request.client_order_id,
                error=str(error),
            )
            found = await self._lookup_after_error(request)
            if found is None:
                raise Disconnected(f"order {request.client_order_id}: {error}") from exc
            return found
        order = self._to_order(raw, request.symbol, request)
        self._remember(order)
        return order

    async def _lookup_after_error(self, request: OrderRequest) -> Order | None:
        """The order a failed create may have placed; None when it is (still) not found."""
        try:
            order = await self.fetch_order(request.symbol, request.client_order_id)
        except OrderNotFound:
            return None
        except ExchangeError as exc:
            log.warning(
                "order_lookup_failed", client_order_id=request.client_order_id, error=str(exc)
            )
            return None
        log.info(
            "order_found_after_error", client_order_id=request.client_order_id, status=order.status
        )
        return order

    async def cancel_order(
        self, symbol: str, client_order_id: str, expires_at: float | None = None
    ) -> Order:
        """Cancel; an order that is no longer open is returned in its final state."""
        self._check_running()
        self._check_not_blocked()
        params = {self._settings.client_order_id_param: self._codec.encode(client_order_id)}
        order_id = self._ids.get(client_order_id)
        try:
            with self._expiry.bound(expires_at, carried=self._expiry.cancels_expire):
                raw = await self._write(
                    "cancel_order", self._client.cancel_order, order_id, symbol, params
                )
        except OrderNotFound:
            return await self.fetch_order(symbol, client_order_id)  # filled, or gone
        except (Disconnected, RateLimited):
            # A cancel is safe to repeat, but the answer settles it too: look it up.
            order = await self.fetch_order(symbol, client_order_id)
            if order.is_open:
                raise
            return order
        if not _complete(raw):
            # Some exchanges (OKX, Bybit) answer a cancel with the ids only: the order's
            # final state comes from a lookup.
            return await self.fetch_order(symbol, client_order_id)
        order = self._to_order(raw, symbol, cid=client_order_id)
        self._remember(order)
        return order

    def clock_offset(self) -> ClockOffset | None:
        sample = self._exchange_clock.sample
        return None if sample is None else sample.public()

    def memory_sizes(self) -> dict[str, int]:
        """Entries in each map keyed by order or trade id (flat over time is the target)."""
        sizes = {f"ids_{name}": n for name, n in self._ids.sizes().items()}
        for symbol, loop in self._orders.items():
            for name, count in loop.sizes().items():
                sizes[f"{symbol} {name}"] = count
        return sizes

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order:
        self._check_running()
        params = {self._settings.client_order_id_param: self._codec.encode(client_order_id)}
        order_id = self._ids.get(client_order_id)
        raw = await self._read(
            "fetch_order",
            self._client.fetch_order,
            order_id,
            symbol,
            params,
            symbol=symbol,
            cid=client_order_id,
        )
        order = self._to_order(raw, symbol, cid=client_order_id)
        self._remember(order)
        return order

    async def fetch_order_fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        order = await self.fetch_order(symbol, client_order_id)
        return await self._fills_of(order)

    async def _fills_of(self, order: Order) -> list[Fill]:
        if order.filled == 0:
            return []
        client = self._client
        quote = (await self.market(order.symbol)).quote
        if client.has.get("fetchOrderTrades"):
            trades = await self._read(
                "fetch_order_trades", client.fetch_order_trades, order.exchange_order_id,
                order.symbol,
            )  # fmt: skip
        else:
            since = int(order.created_at * 1000) - 1000
            trades = await self._read(
                "fetch_my_trades", client.fetch_my_trades, order.symbol, since
            )
        return [
            to_fill(t, order, quote)
            for t in trades
            if str(t.get("order") or order.exchange_order_id) == order.exchange_order_id
        ]

    async def fetch_orders_since(self, symbol: str, since: float) -> list[Order]:
        self._check_running()
        client = self._client
        if not client.has.get("fetchOrders"):
            closed = await self._read(
                "fetch_closed_orders", client.fetch_closed_orders, symbol, int(since * 1000)
            )
            orders = [self._to_order(r, symbol) for r in closed]
            return orders + await self.fetch_open_orders(symbol)
        start = int(since * 1000)
        out: dict[str, Order] = {}
        while True:
            page = await self._read("fetch_orders", client.fetch_orders, symbol, start, _PAGE)
            for raw in page:
                order = self._to_order(raw, symbol)
                out[order.exchange_order_id] = order
            if len(page) < _PAGE:
                break
            start = max(int(o.created_at * 1000) for o in out.values()) + 1
        return sorted(
            (o for o in out.values() if o.created_at >= since), key=lambda o: o.created_at
        )

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        self._check_running()
        raws = await self._read("fetch_open_orders", self._client.fetch_open_orders, symbol)
        orders = [self._to_order(raw, symbol) for raw in raws]
        for order in orders:
            if _ours(order.client_order_id):  # other bots' orders are not remembered
                self._ids.note(order.client_order_id, order.exchange_order_id, True)
        return orders

    # -- calls --------------------------------------------------------------------------

    def _translate(self, exc: Exception, symbol: str = "", cid: str = "") -> ExchangeError:
        headers = getattr(self._client, "last_response_headers", None)
        error = translate(
            exc,
            symbol=symbol,
            client_order_id=cid,
            retry_after_s=retry_after(headers, time.time()),
            exchange=self.name,
        )
        if isinstance(error, RequestExpired) and not isinstance(exc, ExchangeError):
            # Refused by the exchange as late: maybe so, maybe our idea of its clock is off.
            self._exchange_clock.wake()
        if isinstance(error, RateLimited):
            wait = error.retry_after if error.retry_after is not None else _DEFAULT_RETRY_AFTER
            self._blocked_until = max(self._blocked_until, self._clock() + wait)
            log.warning("rate_limited", retry_after=wait)
        return error

    def _check_not_blocked(self) -> None:
        remaining = self._blocked_until - self._clock()
        if remaining > 0:
            raise RateLimited("waiting out the exchange's rate limit", remaining)

    async def _write(self, what: str, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        try:
            return await call(*args)
        except Exception as exc:
            symbol = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            raise self._translate(exc, symbol) from exc

    async def _read(
        self,
        what: str,
        call: Callable[..., Awaitable[_T]],
        *args: Any,
        retries: int | None = None,
        symbol: str = "",
        cid: str = "",
    ) -> _T:
        """A read, retried on connection problems and rate limits with backoff."""
        attempts = self._settings.read_retries if retries is None else retries
        stream_settings = self._settings.stream
        backoff = Backoff(
            stream_settings.reconnect_initial_delay, stream_settings.reconnect_max_delay, self._rng
        )
        while True:
            remaining = self._blocked_until - self._clock()
            if remaining > 0:
                await self._sleep(remaining)
            try:
                return await call(*args)
            except Exception as exc:
                error = self._translate(exc, symbol, cid)
                if attempts <= 0 or not isinstance(error, Disconnected | RateLimited):
                    raise error from exc
                attempts -= 1
                delay = backoff.next()
                log.info("exchange_call_retry", call=what, error=str(error), retry_in=delay)
                await self._sleep(delay)

    # -- internals ----------------------------------------------------------------------

    def _to_order(
        self,
        raw: dict[str, Any],
        symbol: str,
        request: OrderRequest | None = None,
        cid: str = "",
    ) -> Order:
        """A ccxt order with our client order id (decoded; ``cid`` when the answer lacks one)."""
        order = to_order(raw, symbol, request)
        decoded = self._codec.decode(order.client_order_id) if order.client_order_id else cid
        if decoded != order.client_order_id:
            order = replace(order, client_order_id=decoded)
        return order

    def _check_running(self) -> None:
        if self._state != "running":
            raise Disconnected(f"{self.name} exchange is {self._state}, not running")

    def _remember(self, order: Order) -> None:
        if _ours(order.client_order_id):
            self._ids.note(order.client_order_id, order.exchange_order_id, order.is_open)
        loop = self._orders.get(order.symbol)
        if loop is not None:
            loop.track(order)

    def _subscribe(self, symbol: str, subscription: Subscription[_T]) -> AsyncIterator[_T]:
        if self._state == "closed":
            subscription.end()
            return subscription
        subscription.register()
        if self._state == "running":
            self._ensure_loops(symbol)
        return subscription

    def _ensure_loops(self, symbol: str) -> None:
        stream_settings = self._settings.stream
        common: dict[str, Any] = {"clock": self._clock, "sleep": self._sleep, "rng": self._rng}
        if symbol in self._tick_subs and symbol not in self._prices:
            prices = PriceLoop(
                symbol,
                self._client,
                stream_settings,
                fetch_ticker=self._fetch_ticker,
                publish=self._tick_subs[symbol].publish,
                **common,
            )
            self._prices[symbol] = prices
            self._spawn(prices.run(), f"ccxt-prices-{symbol}")
        if symbol in self._order_subs and symbol not in self._orders:
            orders = OrderLoop(
                symbol,
                self._client,
                stream_settings,
                fetch_open=self.fetch_open_orders,
                fetch_order=self.fetch_order,
                fetch_fills=self._fills_of,
                convert=self._to_order,
                publish=lambda update: self._publish_update(symbol, update),
                ours=_ours,
                **common,
            )
            self._orders[symbol] = orders
            self._spawn(orders.run(), f"ccxt-orders-{symbol}")

    def _publish_update(self, symbol: str, update: OrderUpdate) -> None:
        order = update.order
        self._ids.note(order.client_order_id, order.exchange_order_id, order.is_open)
        self._order_subs[symbol].publish(update)

    async def _fetch_ticker(self, symbol: str) -> dict[str, Any]:
        ticker: dict[str, Any] = await self._read(
            "fetch_ticker", self._client.fetch_ticker, symbol, retries=0, symbol=symbol
        )
        return ticker

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._loop_done)

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("exchange_loop_failed", task=task.get_name(), exc_info=task.exception())


def _ours(client_order_id: str) -> bool:
    """An order of a QuantMesh grid (this one or, after a take-over, a former owner's)."""
    return client_order_id.startswith(_OUR_PREFIX)


def _complete(raw: dict[str, Any]) -> bool:
    """Whether a ccxt order answer carries what an ``Order`` needs."""
    return all(raw.get(key) is not None for key in ("side", "price", "amount", "status"))
