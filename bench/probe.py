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
from collections.abc import AsyncIterator, Sequence

from quantmesh.domain import Fill, MarketRules, Order, OrderRequest, OrderUpdate, Tick
from quantmesh.exchange.base import Exchange

__all__ = ["Probe", "TimingExchange"]


class Probe:
    """Per-symbol counters and the latency samples of the measured window."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        n = len(self.symbols)
        self.pushed = [0] * n  # ticks handed to set_price
        self.consumed = [0] * n  # ticks taken by the traders
        self.waiting = [False] * n  # the trader is blocked on its next tick
        self._current_ts = [0.0] * n  # ts of the tick each trader is handling
        self._ordered = [True] * n  # that tick already produced an order
        self.measuring = False
        self.first_latencies: list[float] = []  # seconds, first order of a tick
        self.all_latencies: list[float] = []  # seconds, every order
        self.orders = 0
        self.cancels = 0
        self.hungry: set[int] = set()  # symbols with no tick queued or in hand
        self.changed = asyncio.Event()  # a trader took a tick or became idle

    def reset(self) -> None:
        """Start the measured window: forget the samples and counts so far."""
        self.first_latencies.clear()
        self.all_latencies.clear()
        self.orders = 0
        self.cancels = 0
        self.measuring = True

    def total_consumed(self) -> int:
        return sum(self.consumed)

    def total_pushed(self) -> int:
        return sum(self.pushed)

    def all_idle(self) -> bool:
        """Every trader waits for a tick and none is queued for it."""
        return all(self.waiting) and self.pushed == self.consumed

    # called by the proxy ----------------------------------------------------------------

    def on_wait(self, i: int) -> None:
        self.waiting[i] = True
        self.changed.set()

    def on_tick(self, i: int, tick: Tick) -> None:
        self.waiting[i] = False
        self.consumed[i] += 1
        self._current_ts[i] = tick.ts
        self._ordered[i] = False
        if self.consumed[i] >= self.pushed[i]:
            self.hungry.add(i)
        self.changed.set()

    def on_create(self, i: int) -> None:
        if not self.measuring:
            return
        latency = time.perf_counter() - self._current_ts[i]
        self.orders += 1
        self.all_latencies.append(latency)
        if not self._ordered[i]:
            self._ordered[i] = True
            self.first_latencies.append(latency)

    def on_cancel(self) -> None:
        if self.measuring:
            self.cancels += 1


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

    def watch_ticks(self, symbol: str) -> AsyncIterator[Tick]:
        return _ProbedTicks(self._inner.watch_ticks(symbol), self._probe, self._probe.index[symbol])

    def watch_orders(self, symbol: str) -> AsyncIterator[OrderUpdate]:
        return self._inner.watch_orders(symbol)

    async def create_order(self, request: OrderRequest) -> Order:
        self._probe.on_create(self._probe.index[request.symbol])
        return await self._inner.create_order(request)

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order:
        self._probe.on_cancel()
        return await self._inner.cancel_order(symbol, client_order_id)

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order:
        return await self._inner.fetch_order(symbol, client_order_id)

    async def fetch_order_fills(self, symbol: str, client_order_id: str) -> list[Fill]:
        return await self._inner.fetch_order_fills(symbol, client_order_id)

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        return await self._inner.fetch_open_orders(symbol)
