"""The background loops of the ccxt adapter: one price loop and one order loop per symbol.

- Prices: ``watch_ticker`` while it works; after ``stream_failures_before_polling``
  failures in a row (errors, or no price for ``price_stale_after`` seconds) REST polling
  of ``fetch_ticker`` for ``stream_retry_after`` seconds, then the stream again.
- Orders: ``watch_orders`` with a REST resync (open orders, then a lookup of each order
  that left them) at start, after every stream failure and every
  ``order_resync_interval`` without news; pure REST polling when the exchange has no
  order stream.

Failures back off exponentially with jitter. The order loop follows our own orders only
(``ours``): other bots' orders on the account are neither tracked, looked up nor
published.

Every map keyed by order or trade id here is bounded: followed orders leave when they
close, and the memory of published states and trade ids keeps the last ``_EMITTED_MEMORY``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import ccxt
import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.domain import Fill, Order, OrderUpdate, Tick, fills_cover
from quantmesh.errors import ExchangeError, OrderNotFound
from quantmesh.exchange.backoff import Backoff
from quantmesh.exchange.ccxt.convert import to_tick
from quantmesh.exchange.ccxt.errors import clean_message

log = structlog.get_logger(__name__)

_STREAM_ERRORS = (ccxt.BaseError, OSError, TimeoutError)
_EMITTED_MEMORY = 10_000  # closed orders remembered to drop repeated news of them


@dataclass(frozen=True, slots=True)
class StreamSettings:
    streams: bool = True
    price_stale_after: float = 30.0
    price_poll_interval: float = 2.0
    order_poll_interval: float = 2.0
    order_resync_interval: float = 30.0
    stream_failures_before_polling: int = 3
    stream_retry_after: float = 60.0
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 30.0


class _Pending:
    """One outstanding ccxt ``watch_*`` call, awaited with a timeout and reused after one
    (a ccxt watch future is shared per subscription; cancelling it would break others)."""

    def __init__(self) -> None:
        self._task: asyncio.Future[Any] | None = None

    async def next(self, start: Callable[[], Awaitable[Any]], wait: float) -> Any:
        """The watch call's result (or its error); ``TimeoutError`` after ``wait`` seconds
        leaves the call running for the next attempt."""
        if self._task is None:
            self._task = asyncio.ensure_future(start())
        task = self._task
        if not task.done():
            async with asyncio.timeout(wait):
                await asyncio.wait({task})  # never cancels the task itself
        self._task = None
        return task.result()

    async def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)


class _Loop:
    """What both loops share: the stream-or-poll decision, the failure count that switches
    to polling for a while, and the backoff between attempts."""

    capability = ""  # the ccxt ``has`` entry of the stream

    def __init__(
        self,
        symbol: str,
        client: Any,
        settings: StreamSettings,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
        rng: Callable[[], float],
    ) -> None:
        self.symbol = symbol
        self._client = client
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._backoff = Backoff(settings.reconnect_initial_delay, settings.reconnect_max_delay, rng)
        self._pending = _Pending()
        self._failures = 0
        self._poll_until = 0.0
        self.mode = "stream" if settings.streams and client.has.get(self.capability) else "poll"
        self.reconnects = 0

    def streaming(self) -> bool:
        """Use the stream now (it exists and is not in a polling spell after failures)."""
        return self.mode == "stream" and self._clock() >= self._poll_until

    def _stream_ok(self) -> None:
        self._failures = 0
        self._backoff.reset()

    async def _stream_failed(self, event: str, exc: BaseException) -> None:
        """Count a failure, maybe switch to polling for a while, and wait the backoff."""
        settings = self._settings
        self._failures += 1
        self.reconnects += 1
        if self._failures >= settings.stream_failures_before_polling:
            self._failures = 0
            self._poll_until = self._clock() + settings.stream_retry_after
            log.warning(f"{event}_polling", polling_for=settings.stream_retry_after)
        await self._pause(f"{event}_failed", exc)

    async def _pause(self, event: str, exc: BaseException) -> None:
        delay = self._backoff.next()
        error = "nothing in time" if isinstance(exc, TimeoutError) else clean_message(exc)
        log.warning(event, error=error, retry_in=round(delay, 2), attempt=self._backoff.attempts)
        await self._sleep(delay)


class PriceLoop(_Loop):
    """Feeds ``publish`` with ticks of one symbol; ``last_price_at`` measures freshness."""

    capability = "watchTicker"

    def __init__(
        self,
        symbol: str,
        client: Any,
        settings: StreamSettings,
        *,
        fetch_ticker: Callable[[str], Awaitable[dict[str, Any]]],
        publish: Callable[[Tick], None],
        **timing: Any,
    ) -> None:
        super().__init__(symbol, client, settings, **timing)
        self._fetch_ticker = fetch_ticker
        self._publish = publish
        self.last_price_at: float | None = None

    async def run(self) -> None:
        settings = self._settings
        try:
            while True:
                if self.streaming():
                    try:
                        ticker = await self._pending.next(
                            lambda: self._client.watch_ticker(self.symbol),
                            settings.price_stale_after,
                        )
                    except _STREAM_ERRORS as exc:
                        await self._stream_failed("price_stream", exc)
                        continue
                    self._stream_ok()
                    self._emit(ticker)
                    continue
                try:
                    ticker = await self._fetch_ticker(self.symbol)
                except ExchangeError as exc:
                    await self._pause("price_poll_failed", exc)
                    continue
                self._backoff.reset()
                self._emit(ticker)
                await self._sleep(settings.price_poll_interval)
        finally:
            await self._pending.cancel()

    def _emit(self, ticker: dict[str, Any]) -> None:
        tick = to_tick(self.symbol, ticker)
        if tick is not None:
            self.last_price_at = self._clock()
            self._publish(tick)


class OrderLoop(_Loop):
    """Publishes fills and closings of orders on one symbol, from the stream or polling."""

    capability = "watchOrders"

    def __init__(
        self,
        symbol: str,
        client: Any,
        settings: StreamSettings,
        *,
        fetch_open: Callable[[str], Awaitable[list[Order]]],
        fetch_order: Callable[[str, str], Awaitable[Order]],
        fetch_fills: Callable[[Order], Awaitable[list[Fill]]],
        convert: Callable[[dict[str, Any], str], Order],
        publish: Callable[[OrderUpdate], None],
        ours: Callable[[str], bool] = lambda client_order_id: True,
        **timing: Any,
    ) -> None:
        super().__init__(symbol, client, settings, **timing)
        self._ours = ours
        self._fetch_open = fetch_open
        self._fetch_order = fetch_order
        self._fetch_fills = fetch_fills
        self._convert = convert
        self._publish = publish
        self._known: dict[str, Order] = {}  # client order id -> last seen open state
        self._emitted: OrderedDict[str, tuple[str, Any]] = OrderedDict()  # id -> (status, filled)
        self._seen_trades: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._baseline = False

    def track(self, order: Order) -> None:
        """An order this process placed or looked up: followed until it closes."""
        if not self._ours(order.client_order_id):
            return
        if order.is_open:
            self._known[order.client_order_id] = order
        self._note_emitted(order)

    def sizes(self) -> dict[str, int]:
        """How many entries each id-keyed map holds (for the soak benchmark)."""
        return {
            "followed": len(self._known),
            "emitted": len(self._emitted),
            "seen_trades": len(self._seen_trades),
        }

    def _note_emitted(self, order: Order) -> None:
        self._emitted[order.exchange_order_id] = (order.status, order.filled)
        self._emitted.move_to_end(order.exchange_order_id)
        while len(self._emitted) > _EMITTED_MEMORY:
            self._emitted.popitem(last=False)

    async def run(self) -> None:
        settings = self._settings
        try:
            await self._resync()
            while True:
                if self.streaming():
                    try:
                        raws = await self._pending.next(
                            lambda: self._client.watch_orders(self.symbol),
                            settings.order_resync_interval,
                        )
                    except TimeoutError:
                        await self._resync()  # no news for a while: make sure none was lost
                        continue
                    except _STREAM_ERRORS as exc:
                        await self._stream_failed("order_stream", exc)
                        await self._resync()  # what happened while the stream was down
                        continue
                    self._stream_ok()
                    for raw in raws:
                        if raw.get("symbol") in (None, self.symbol):
                            await self._emit_raw(raw)
                    continue
                await self._resync()
                await self._sleep(settings.order_poll_interval)
        finally:
            await self._pending.cancel()

    async def _emit_raw(self, raw: dict[str, Any]) -> None:
        """Publish one streamed order; one the adapter cannot read is settled by a resync
        instead of ending the stream for good."""
        try:
            order = self._convert(raw, self.symbol)
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            log.warning("order_update_unreadable", error=f"{type(exc).__name__}: {exc}")
            await self._resync()
            return
        if self._ours(order.client_order_id):
            await self._emit(order)

    async def _resync(self) -> None:
        """Compare open orders with those we follow; look up each one that left."""
        try:
            open_now = {
                o.client_order_id: o
                for o in await self._fetch_open(self.symbol)
                if self._ours(o.client_order_id)
            }
        except ExchangeError as exc:
            log.warning("order_resync_failed", error=str(exc))
            return
        if not self._baseline:
            self._baseline = True
            for order in open_now.values():
                self.track(order)
            return
        keep: dict[str, Order] = {}
        for cid, order in open_now.items():
            previous = self._known.get(cid)
            changed = previous is not None and order.filled != previous.filled
            if changed and not await self._emit(order):
                continue
            keep[cid] = order
        for cid in self._known.keys() - open_now.keys():
            try:
                order = await self._fetch_order(self.symbol, cid)
            except OrderNotFound:
                continue
            except ExchangeError as exc:
                log.warning("order_lookup_failed", client_order_id=cid, error=str(exc))
                keep[cid] = self._known[cid]  # try again at the next resync
                continue
            if not await self._emit(order):
                keep[cid] = self._known[cid]
        self._known = keep

    async def _emit(self, order: Order) -> bool:
        """Publish ``order`` with its new fills; False when the fills could not be fetched
        (then nothing is published: a fill without its trades would be lost)."""
        state = (order.status, order.filled)
        if self._emitted.get(order.exchange_order_id) == state and order.filled == 0:
            return True
        fills: list[Fill] = []
        if order.filled > 0:
            try:
                fills = await self._fetch_fills(order)
            except ExchangeError as exc:
                log.warning(
                    "fills_fetch_failed", client_order_id=order.client_order_id, error=str(exc)
                )
                self._known[order.client_order_id] = order
                return False
            if not fills_cover(order, fills):
                # The order's status ran ahead of its trades: publish it once they are
                # all listed (at the next resync), never a closed order missing fills.
                log.warning(
                    "fills_incomplete",
                    client_order_id=order.client_order_id,
                    filled=str(order.filled),
                )
                self._known[order.client_order_id] = order
                return False
        new = [f for f in fills if f.trade_id not in self._seen_trades]
        if self._emitted.get(order.exchange_order_id) == state and not new:
            return True
        for fill in new:
            self._remember(fill.trade_id)
        self._note_emitted(order)
        if order.is_open:
            self._known[order.client_order_id] = order
        else:
            self._known.pop(order.client_order_id, None)
        self._publish(OrderUpdate(order, tuple(new)))
        return True

    def _remember(self, trade_id: str) -> None:
        self._seen_trades.add(trade_id)
        self._seen_order.append(trade_id)
        if len(self._seen_order) > _EMITTED_MEMORY:
            self._seen_trades.discard(self._seen_order.popleft())
