"""Instruments for the pipeline bench: a timing proxy around the exchange, and its probe.

``TimingExchange`` forwards every call to the simulated exchange unchanged and tells the
``Probe`` when a trader takes a tick from ``watch_ticks`` and when it calls
``create_order``. The simulated exchange runs on ``time.perf_counter`` as its clock, so a
tick's ``ts`` is the instant ``set_price`` created it: the tick-to-order latency of an order
is its ``create_order`` entry time minus the ``ts`` of the tick its trader is handling.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence

from quantmesh.domain import ClockOffset, Fill, MarketRules, Order, OrderRequest, OrderUpdate, Tick
from quantmesh.errors import DuplicateOrder, OrderRejected
from quantmesh.exchange.base import Exchange, PriceHealth

__all__ = ["Probe", "TimingExchange"]


class Probe:
    """Per-symbol counters, and the samples of the measured window (in seconds)."""

    def __init__(self, symbols: Sequence[str], tick_queue_size: int) -> None:
        self.symbols = list(symbols)
        self._queue_size = tick_queue_size  # the exchange's, per subscription
        self.index = {s: i for i, s in enumerate(self.symbols)}
        n = len(self.symbols)
        self.pushed = [0] * n  # ticks handed to set_price
        self._push_times: list[deque[float]] = [deque() for _ in range(n)]
        self.consumed = [0] * n  # ticks taken by the traders
        self.waiting = [False] * n  # the trader is blocked on its next tick
        self.hungry: set[int] = set()  # symbols with no tick queued or in hand
        self.changed = asyncio.Event()  # a trader took a tick or started waiting
        self._tick_ts = [0.0] * n  # ts (= set_price time) of the tick being handled
        self._taken_at = [0.0] * n  # when the trader took it
        self._ordered = [True] * n  # it already produced an order
        self._filled_ids: set[str] = set()
        self.reset()
        self.measuring = False  # until the warm-up is over

    def reset(self) -> None:
        """Start the measured window: forget the samples and counts so far."""
        self.take = array("d")  # set_price -> the trader takes the tick (many: compact)
        self.first: list[float] = []  # set_price -> first create_order of that tick
        self.handle: list[float] = []  # tick taken -> first create_order
        self.every: list[float] = []  # set_price -> every create_order
        self.dropped = 0  # ticks the exchange dropped because the trader was behind
        self.cancels = 0
        self.rejects = 0  # create_order refused (OrderRejected: funds, rules)
        self.duplicates = 0  # create_order refused: that client order id is open already
        self.refilled = 0  # an order placed again under an id that already had a fill
        self.measuring = True

    @property
    def orders(self) -> int:
        return len(self.every)

    def total_consumed(self) -> int:
        return sum(self.consumed)

    def total_pushed(self) -> int:
        return sum(self.pushed)

    def all_idle(self) -> bool:
        """Every trader waits for a tick and none is queued for it."""
        return all(self.waiting) and not any(self._push_times)

    def before_push(self, i: int) -> None:
        """Call right before ``set_price`` (whose tick then has ``ts`` >= this time)."""
        self.pushed[i] += 1
        pushes = self._push_times[i]
        if len(pushes) >= self._queue_size:
            pushes.popleft()  # the exchange drops the oldest queued tick
            if self.measuring:
                self.dropped += 1
        pushes.append(time.perf_counter())

    # called by the proxy ----------------------------------------------------------------

    def on_wait(self, i: int) -> None:
        self.waiting[i] = True
        self.changed.set()

    def on_tick(self, i: int, tick: Tick) -> None:
        now = time.perf_counter()
        self.waiting[i] = False
        self.consumed[i] += 1
        self._tick_ts[i] = tick.ts
        self._taken_at[i] = now
        self._ordered[i] = False
        # Forget this tick's push, and any older one that was dropped unseen.
        pushes = self._push_times[i]
        while pushes and pushes[0] <= tick.ts:
            pushes.popleft()
        if self.measuring:
            self.take.append(now - tick.ts)
        if not pushes:
            self.hungry.add(i)
        self.changed.set()

    def on_create(self, i: int, client_order_id: str) -> None:
        if not self.measuring:
            return
        now = time.perf_counter()
        latency = now - self._tick_ts[i]
        self.every.append(latency)
        if client_order_id in self._filled_ids:
            self.refilled += 1
        if not self._ordered[i]:
            self._ordered[i] = True
            self.first.append(latency)
            self.handle.append(now - self._taken_at[i])

    def on_cancel(self) -> None:
        if self.measuring:
            self.cancels += 1

    def on_reject(self, duplicate: bool) -> None:
        if self.measuring:
            if duplicate:
                self.duplicates += 1
            else:
                self.rejects += 1

    def on_order(self, order: Order) -> None:
        """An order state the trader sees (a call's result or an update)."""
        if order.filled > 0:
            self._filled_ids.add(order.client_order_id)


class _ProbedTicks:
    """The trader's tick iterator, reporting each wait and each tick to the probe."""

    __slots__ = ("_i", "_inner", "_probe")

    def __init__(self, inner: AsyncIterator[Tick], probe: Probe, i: int) -> None:
        self._inner = inner
        self._probe = probe
        self._i = i

    def __aiter__(self) -> _ProbedTicks:
        return self

    async def __anext__(self) -> Tick:
        self._probe.on_wait(self._i)
        tick = await self._inner.__anext__()
        self._probe.on_tick(self._i, tick)
        return tick


class _ProbedUpdates:
    """The trader's order-update iterator, reporting each update to the probe."""

    __slots__ = ("_inner", "_probe")

    def __init__(self, inner: AsyncIterator[OrderUpdate], probe: Probe) -> None:
        self._inner = inner
        self._probe = probe

    def __aiter__(self) -> _ProbedUpdates:
        return self

    async def __anext__(self) -> OrderUpdate:
        update = await self._inner.__anext__()
        self._probe.on_order(update.order)
        return update


class TimingExchange:
    """An ``Exchange`` that forwards to ``inner`` and reports to ``probe``."""

    def __init__(self, inner: Exchange, probe: Probe) -> None:
        self._inner = inner
        self._probe = probe

    @property
    def name(self) -> str:
        return self._inner.name

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def market(self, symbol: str) -> MarketRules:
        return await self._inner.market(symbol)

    def clock_offset(self) -> ClockOffset | None:
        return self._inner.clock_offset()

    def stream_reconnects(self) -> Mapping[tuple[str, str], int]:
        return self._inner.stream_reconnects()

    def price_health(self) -> PriceHealth | None:
        return self._inner.price_health()

    def watch_ticks(self, symbol: str) -> AsyncIterator[Tick]:
        return _ProbedTicks(self._inner.watch_ticks(symbol), self._probe, self._probe.index[symbol])

    def watch_orders(self, symbol: str) -> AsyncIterator[OrderUpdate]:
        return _ProbedUpdates(self._inner.watch_orders(symbol), self._probe)

    async def create_order(self, request: OrderRequest) -> Order:
        self._probe.on_create(self._probe.index[request.symbol], request.client_order_id)
        try:
            order = await self._inner.create_order(request)
        except OrderRejected as exc:
            self._probe.on_reject(isinstance(exc, DuplicateOrder))
            raise
        self._probe.on_order(order)
        return order

    async def cancel_order(
        self, symbol: str, client_order_id: str, expires_at: float | None = None
    ) -> Order:
        self._probe.on_cancel()
        order = await self._inner.cancel_order(symbol, client_order_id, expires_at)
        self._probe.on_order(order)
        return order

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order:
        return await self._inner.fetch_order(symbol, client_order_id)

    async def fetch_order_fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        return await self._inner.fetch_order_fills(symbol, client_order_id)

    async def fetch_orders_since(self, symbol: str, since: float) -> list[Order]:
        return await self._inner.fetch_orders_since(symbol, since)

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        return await self._inner.fetch_open_orders(symbol)
