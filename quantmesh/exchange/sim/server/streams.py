"""The simulator's WebSockets: market streams (``/ws``) and the WebSocket API (``/ws-api/v3``).

Market streams: ``<symbol>@ticker`` (also ``miniTicker``, ``bookTicker``) on every price
change and each second without one; ``@trade`` and ``@aggTrade`` with every public print
(the same prints, ids and times as ``GET /api/v3/trades``); ``@kline_1m`` with the
current minute's candle on every print and each second without one.

Both as ccxt.pro's ``binance`` uses them: ``watch_ticker``, ``watch_trades``, ``watch_ohlcv``,
``watch_orders``
(``userDataStream.subscribe.signature``) and the ``*_ws`` order methods (``order.place``,
``order.cancel``, ``order.status``, ``openOrders.status``, ``account.status``).

Every WebSocket API method but ``ping`` and ``time`` is signed, and goes through the same
checks as a signed REST call (``RestApi.authenticate``: key, expiry, signature) when it is
processed, after any injected latency; order creates and cancels are logged as actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakSet

import structlog
from aiohttp import WSMsgType, web

from quantmesh.domain import compact_symbol
from quantmesh.errors import Disconnected
from quantmesh.exchange.sim.server import binance as wire
from quantmesh.exchange.sim.server.binance import ApiError, Json
from quantmesh.exchange.sim.server.faults import FaultDice
from quantmesh.exchange.sim.server.market_data import (
    MarketData,
    agg_trade_event,
    kline_event,
    trade_event,
)
from quantmesh.exchange.sim.server.rest import RestApi, SignedCall
from quantmesh.exchange.sim.simulated import SimulatedExchange

log = structlog.get_logger(__name__)

_TICK_CHANNELS = ("ticker", "miniTicker", "bookTicker")
_PRINT_CHANNELS = ("trade", "aggTrade", "kline_1m")
_REPEAT_EVERY = 1.0  # seconds

Pumps = dict[str, asyncio.Task[None]]
WsMethod = Callable[[web.WebSocketResponse, SignedCall, Pumps], Awaitable[Any]]


class Streams:
    """WebSocket handlers; every open socket is tracked so faults can drop them all."""

    def __init__(
        self, exchange: SimulatedExchange, api: RestApi, dice: FaultDice, market_data: MarketData
    ) -> None:
        self.exchange = exchange
        self.market_data = market_data
        self.api = api  # the signed calls' checks, the order book's handlers, the action log
        self.clock = api.clock
        self.dice = dice
        # Every signed WebSocket API method; the dispatcher builds the call each one checks.
        self.signed_methods: dict[str, WsMethod] = {
            "userDataStream.subscribe.signature": self._subscribe_user_data,
            "order.place": self._order_place,
            "order.cancel": self._order_cancel,
            "order.status": self._order_status,
            "openOrders.status": self._open_orders,
            "account.status": self._account,
        }
        self.sockets: WeakSet[web.WebSocketResponse] = WeakSet()
        self.connections = 0  # every WebSocket ever accepted, for tests

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ws", self.market),
            web.get("/ws/{stream:.*}", self.market),
            web.get("/ws-api/v3", self.ws_api),
        ]

    async def drop_all(self) -> int:
        """Close every open WebSocket (a fault); returns how many were open."""
        sockets = list(self.sockets)
        for socket in sockets:
            await socket.close(code=1011, message=b"dropped by fault injection")
        return len(sockets)

    async def _open(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self.sockets.add(socket)
        self.connections += 1
        return socket

    async def _serve(
        self,
        socket: web.WebSocketResponse,
        on_message: Callable[[Json, dict[str, asyncio.Task[None]]], Awaitable[None]],
        pumps: dict[str, asyncio.Task[None]],
    ) -> None:
        """Read messages until the socket closes or the drop fault fires; then clean up."""
        drop_after = self.dice.faults.ws_drop_after
        try:
            async with asyncio.timeout(drop_after if drop_after > 0 else None):
                async for msg in socket:
                    if msg.type != WSMsgType.TEXT:
                        continue
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(data, dict):
                        await on_message(data, pumps)
        except TimeoutError:
            log.info("sim_ws_dropped", after=drop_after)
        finally:
            for task in pumps.values():
                task.cancel()
            await asyncio.gather(*pumps.values(), return_exceptions=True)
            if not socket.closed:
                await socket.close(code=1011, message=b"dropped by fault injection")
            self.sockets.discard(socket)

    # -- market streams ----------------------------------------------------------------

    async def market(self, request: web.Request) -> web.WebSocketResponse:
        socket = await self._open(request)
        pumps: dict[str, asyncio.Task[None]] = {}
        stream = request.match_info.get("stream", "")
        if "@" in stream:  # /ws/<symbol>@<channel>: subscribed by the URL
            self._subscribe(socket, stream, pumps)

        async def on_message(data: Json, pumps: dict[str, asyncio.Task[None]]) -> None:
            method = data.get("method")
            params = data.get("params") or []
            if method == "SUBSCRIBE":
                for name in params:
                    self._subscribe(socket, str(name), pumps)
                await socket.send_json({"result": None, "id": data.get("id")})
            elif method == "UNSUBSCRIBE":
                for name in params:
                    task = pumps.pop(str(name), None)
                    if task is not None:
                        task.cancel()
                await socket.send_json({"result": None, "id": data.get("id")})
            elif method == "LIST_SUBSCRIPTIONS":
                await socket.send_json({"result": sorted(pumps), "id": data.get("id")})
            else:
                error = {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}
                await socket.send_json({"error": error, "id": data.get("id")})

        await self._serve(socket, on_message, pumps)
        return socket

    def _subscribe(
        self, socket: web.WebSocketResponse, name: str, pumps: dict[str, asyncio.Task[None]]
    ) -> None:
        market, _, channel = name.partition("@")
        symbol = next(
            (s for s in self.exchange.symbols if compact_symbol(s).lower() == market.lower()),
            None,
        )
        if symbol is None or name in pumps:
            return
        if channel in _TICK_CHANNELS:
            pumps[name] = asyncio.create_task(self._pump_ticks(socket, symbol, channel))
        elif channel in _PRINT_CHANNELS and symbol in self.market_data.histories:
            pumps[name] = asyncio.create_task(self._pump_prints(socket, symbol, channel))

    async def _pump_prints(self, socket: web.WebSocketResponse, symbol: str, channel: str) -> None:
        """Each public print of ``symbol`` once (trades), or the minute's candle on each
        print and every second without one (klines, as Binance pushes them)."""
        market = compact_symbol(symbol)
        history = self.market_data.history(symbol)
        prints = self.market_data.watch_prints(symbol)
        with contextlib.suppress(ConnectionError, RuntimeError, StopAsyncIteration):
            while not socket.closed:
                if channel == "kline_1m":
                    event = kline_event(market, history, self.clock.now_ms())
                    if event is not None:
                        await socket.send_json(event)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_REPEAT_EVERY):
                            await anext(prints)
                    continue
                printed = await anext(prints)
                build = trade_event if channel == "trade" else agg_trade_event
                await socket.send_json(build(market, printed, self.clock.now_ms()))

    async def _pump_ticks(self, socket: web.WebSocketResponse, symbol: str, channel: str) -> None:
        """Every price change, and the last price again each second without one (Binance
        pushes the ticker stream every 1000 ms whether the price moved or not)."""
        engine = self.exchange.engine
        rules = engine.rules(symbol)
        ticks = self.exchange.watch_ticks(symbol)
        with contextlib.suppress(ConnectionError, RuntimeError, StopAsyncIteration):
            while not socket.closed:
                price = engine.last_price(symbol)
                if price is not None:
                    await socket.send_json(
                        _market_event(channel, rules, price, self.clock.now_ms())
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_REPEAT_EVERY):
                        await anext(ticks)

    # -- WebSocket API (user data) -----------------------------------------------------

    async def ws_api(self, request: web.Request) -> web.WebSocketResponse:
        socket = await self._open(request)
        pumps: Pumps = {}

        async def on_message(data: Json, pumps: Pumps) -> None:
            request_id = data.get("id")
            arrived_us = self.clock.now_us()
            if self.dice.faults.latency > 0:
                await asyncio.sleep(self.dice.faults.latency)
            try:
                result = await self._ws_call(socket, data, pumps, arrived_us)
            except ApiError as exc:
                await socket.send_json(
                    {"id": request_id, "status": exc.status, "error": exc.body()}
                )
                return
            except Disconnected as exc:  # the state file cannot be written
                error = {"code": -1001, "msg": str(exc)}
                await socket.send_json({"id": request_id, "status": 503, "error": error})
                return
            await socket.send_json({"id": request_id, "status": 200, "result": result})

        await self._serve(socket, on_message, pumps)
        return socket

    async def _ws_call(
        self, socket: web.WebSocketResponse, data: Json, pumps: Pumps, arrived_us: int
    ) -> Any:
        method = str(data.get("method"))
        params = data.get("params") or {}
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": self.clock.now_ms()}
        handler = self.signed_methods.get(method)
        if handler is None:
            raise ApiError(400, -1020, "This operation is not supported.")
        if not isinstance(params, dict):
            raise ApiError(400, -1104, "Not all sent parameters were read.")

        def verify(secret: str) -> None:
            wire.check_ws_signature(secret, params)

        api_key = params.get("apiKey")
        call = SignedCall(
            str(api_key) if api_key else None, wire.ws_params(params), arrived_us, method, verify
        )
        return await handler(socket, call, pumps)

    async def _subscribe_user_data(
        self, socket: web.WebSocketResponse, call: SignedCall, pumps: Pumps
    ) -> Json:
        self.api.authenticate(call)
        subscription = len(pumps)
        for symbol in self.exchange.symbols:
            key = f"{subscription}:{symbol}"
            pumps[key] = asyncio.create_task(self._pump_orders(socket, subscription, symbol))
        return {"subscriptionId": subscription}

    async def _order_place(self, socket: web.WebSocketResponse, call: SignedCall, _: Pumps) -> Json:
        order, fills = await self.api.place(call)
        return wire.new_order_json(order, fills)

    async def _order_cancel(
        self, socket: web.WebSocketResponse, call: SignedCall, _: Pumps
    ) -> Json:
        return wire.cancel_json(await self.api.cancel(call))

    async def _order_status(
        self, socket: web.WebSocketResponse, call: SignedCall, _: Pumps
    ) -> Json:
        return wire.order_json(self.api.query(call))

    async def _open_orders(
        self, socket: web.WebSocketResponse, call: SignedCall, _: Pumps
    ) -> list[Json]:
        return [wire.order_json(o) for o in self.api.open_orders_of(call)]

    async def _account(self, socket: web.WebSocketResponse, call: SignedCall, _: Pumps) -> Json:
        return self.api.account_of(call)

    async def _pump_orders(
        self, socket: web.WebSocketResponse, subscription: int, symbol: str
    ) -> None:
        updates = self.exchange.watch_orders(symbol)
        with contextlib.suppress(ConnectionError, RuntimeError):
            async for update in updates:
                if socket.closed:
                    return
                fills = update.fills or (None,)
                for fill in fills:
                    event = wire.execution_report(update.order, fill, self.clock.now_ms())
                    await socket.send_json({"subscriptionId": subscription, "event": event})


def _market_event(channel: str, rules: Any, price: Any, now_ms: int) -> Json:
    ticker = wire.ticker_event(rules, price, now_ms)
    if channel == "bookTicker":
        return {"u": now_ms, **{k: ticker[k] for k in ("s", "b", "B", "a", "A")}}
    if channel == "miniTicker":
        mini = ("s", "c", "o", "h", "l", "v", "q")
        return {"e": "24hrMiniTicker", "E": now_ms, **{k: ticker[k] for k in mini}}
    return ticker
