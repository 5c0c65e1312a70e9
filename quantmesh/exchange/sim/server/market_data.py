"""Public market data of the simulator: ``GET /api/v3/klines``, ``/api/v3/trades`` and
``/api/v3/aggTrades``, in Binance's format and with its parameters and limits, served
from each market's ``PriceHistory`` (the seeded past, then the published prices, which a
task records as the feeds publish them). Each recorded print is also handed to the
subscribers of ``watch_prints`` (the ``@trade``, ``@aggTrade`` and ``@kline_1m`` streams)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal

from aiohttp import web

from quantmesh.domain import Tick
from quantmesh.exchange.fanout import Subscribers, Subscription
from quantmesh.exchange.sim.history import PriceHistory, Print
from quantmesh.exchange.sim.server import binance as wire
from quantmesh.exchange.sim.server.binance import ApiError, Json
from quantmesh.exchange.sim.server.clock import ServerClock
from quantmesh.exchange.sim.simulated import SimulatedExchange

__all__ = ["INTERVALS", "MarketData", "agg_trade_event", "kline_event", "trade_event"]

_M, _H, _D = 60_000, 3_600_000, 86_400_000
INTERVALS = {
    "1m": _M, "3m": 3 * _M, "5m": 5 * _M, "15m": 15 * _M, "30m": 30 * _M, "1h": _H,
    "2h": 2 * _H, "4h": 4 * _H, "6h": 6 * _H, "8h": 8 * _H, "12h": 12 * _H, "1d": _D,
    "3d": 3 * _D,
}  # fmt: skip
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
MAX_AGG_WINDOW_MS = _H  # aggTrades: startTime and endTime at most an hour apart
BAD_INTERVAL = ApiError(400, -1120, "Invalid interval.")


def _bad(param: str) -> ApiError:
    return ApiError(400, -1100, f"Illegal characters found in parameter '{param}'.")


def _int(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise _bad(name)
    return int(raw)


def _limit(params: dict[str, str]) -> int:
    limit = _int(params, "limit")
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def _num(value: Decimal) -> str:
    return f"{value:f}"


_PRINT_QUEUE = 1000  # prints a slow stream subscriber may lag behind before losing some


class MarketData:
    """The handlers, and the task recording published prices into the histories.

    The histories start with ``start()``, once the exchange runs (they end at its restored
    prices); until then every market is unknown.
    """

    def __init__(
        self,
        exchange: SimulatedExchange,
        clock: ServerClock,
        seed: int | None = None,
        start_ms: int | None = None,
    ) -> None:
        self.exchange = exchange
        self.clock = clock
        self._seed = seed
        self._start_ms = start_ms
        self.histories: dict[str, PriceHistory] = {}
        self._print_subs: dict[str, Subscribers[Print]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def watch_prints(self, symbol: str) -> AsyncIterator[Print]:
        """Every print of ``symbol`` recorded from now on (ends when market data closes)."""
        subs = self._print_subs.setdefault(symbol, Subscribers())
        subscription = Subscription[Print](subs, _PRINT_QUEUE)
        subscription.register()
        return subscription

    def history(self, symbol: str) -> PriceHistory:
        return self.histories[symbol]

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v3/klines", self.klines),
            web.get("/api/v3/uiKlines", self.klines),
            web.get("/api/v3/trades", self.trades),
            web.get("/api/v3/historicalTrades", self.trades),
            web.get("/api/v3/aggTrades", self.agg_trades),
        ]

    def start(self) -> None:
        """Build the histories and record every published price (call once the exchange
        runs)."""
        exchange = self.exchange
        started = int(time.time() * 1000) if self._start_ms is None else self._start_ms
        for n, symbol in enumerate(exchange.symbols):
            rules = exchange.engine.rules(symbol)
            price = exchange.engine.last_price(symbol) or Decimal(1)
            walk_seed = None if self._seed is None else self._seed * 1000 + n
            self.histories[symbol] = PriceHistory(
                price, rules.tick_size, rules.lot_size, started, seed=walk_seed
            )
        for symbol in self.histories:
            ticks = exchange.watch_ticks(symbol)
            self._tasks.append(asyncio.create_task(self._record(symbol, ticks)))

    async def _record(self, symbol: str, ticks: AsyncIterator[Tick]) -> None:
        history = self.histories[symbol]
        async for tick in ticks:
            printed = history.record(int(tick.ts * 1000), tick.price)
            subscribers = self._print_subs.get(symbol)
            if subscribers is not None:
                subscribers.publish(printed)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for subs in self._print_subs.values():
            subs.end_all()

    def _history(self, params: dict[str, str]) -> PriceHistory:
        compact = params.get("symbol")
        if not compact:
            raise wire.missing("symbol")
        for symbol, history in self.histories.items():
            if symbol.replace("/", "") == compact.upper():
                return history
        raise wire.BAD_SYMBOL

    async def klines(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        history = self._history(params)
        interval = params.get("interval")
        if not interval:
            raise wire.missing("interval")
        if interval not in INTERVALS:
            raise BAD_INTERVAL
        step = INTERVALS[interval]
        start, end = _int(params, "startTime"), _int(params, "endTime")
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1023, "Start time is greater than end time.")
        now = self.clock.now_ms()
        rows = [
            [c.open_ms, _num(c.open), _num(c.high), _num(c.low), _num(c.close), _num(c.volume),
             c.open_ms + step - 1, _num(c.volume * c.close), c.trades, "0", "0", "0"]
            for c in history.klines(step, start, end, _limit(params), now)
        ]  # fmt: skip
        return web.json_response(rows)

    async def trades(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        history = self._history(params)
        now = self.clock.now_ms()
        from_id = _int(params, "fromId")
        limit = _limit(params)
        found = (
            history.recent_trades(limit, now)
            if from_id is None
            else history.trades_from_id(from_id, limit, now)
        )
        return web.json_response([_trade(p) for p in found])

    async def agg_trades(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        history = self._history(params)
        now = self.clock.now_ms()
        limit = _limit(params)
        from_id = _int(params, "fromId")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        if start is not None and end is not None:
            if end < start or end - start > MAX_AGG_WINDOW_MS:
                raise ApiError(400, -1127, "More than 1 hours between startTime and endTime.")
            found = history.trades_between(start, end, limit, now)
        elif start is not None:
            found = history.trades_between(start, start + MAX_AGG_WINDOW_MS, limit, now)
        elif end is not None:
            found = history.trades_between(end - MAX_AGG_WINDOW_MS, end, 10 * MAX_LIMIT, now)
            found = found[-limit:]
        elif from_id is not None:
            found = history.trades_from_id(from_id, limit, now)
        else:
            found = history.recent_trades(limit, now)
        return web.json_response([_agg(p) for p in found])


def trade_event(market: str, p: Print, now_ms: int) -> Json:
    """A ``<symbol>@trade`` stream event (``market``: the compact symbol)."""
    return {
        "e": "trade", "E": now_ms, "s": market, "t": p.id, "p": _num(p.price),
        "q": _num(p.qty), "T": p.time_ms, "m": p.buyer_maker, "M": True,
    }  # fmt: skip


def agg_trade_event(market: str, p: Print, now_ms: int) -> Json:
    """A ``<symbol>@aggTrade`` stream event."""
    return {"e": "aggTrade", "E": now_ms, "s": market, **_agg(p)}


def kline_event(market: str, history: PriceHistory, now_ms: int) -> Json | None:
    """A ``<symbol>@kline_1m`` stream event: the current minute's candle so far."""
    candles = history.klines(INTERVALS["1m"], None, None, 1, now_ms)
    if not candles:
        return None
    candle = candles[-1]
    kline = {
        "t": candle.open_ms, "T": candle.open_ms + INTERVALS["1m"] - 1, "s": market,
        "i": "1m", "f": -1, "L": -1, "o": _num(candle.open), "c": _num(candle.close),
        "h": _num(candle.high), "l": _num(candle.low), "v": _num(candle.volume),
        "n": candle.trades, "x": False, "q": _num(candle.volume * candle.close),
        "V": "0", "Q": "0", "B": "0",
    }  # fmt: skip
    return {"e": "kline", "E": now_ms, "s": market, "k": kline}


def _trade(p: Print) -> Json:
    return {
        "id": p.id,
        "price": _num(p.price),
        "qty": _num(p.qty),
        "quoteQty": _num(p.price * p.qty),
        "time": p.time_ms,
        "isBuyerMaker": p.buyer_maker,
        "isBestMatch": True,
    }


def _agg(p: Print) -> Json:
    return {
        "a": p.id,
        "p": _num(p.price),
        "q": _num(p.qty),
        "f": p.id,
        "l": p.id,
        "T": p.time_ms,
        "m": p.buyer_maker,
        "M": True,
    }
