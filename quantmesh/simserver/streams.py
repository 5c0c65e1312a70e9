"""The simulator's WebSockets: market streams (``/ws``) and the WebSocket API user data
stream (``/ws-api/v3``, ``userDataStream.subscribe.signature``), as ccxt.pro's ``binance``
uses them for ``watch_ticker`` and ``watch_orders``."""

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
from quantmesh.exchange.simulated import SimulatedExchange
from quantmesh.simserver import binance as wire
from quantmesh.simserver.binance import ApiError, Json
from quantmesh.simserver.faults import FaultDice
from quantmesh.simserver.rest import now_ms

log = structlog.get_logger(__name__)

_CHANNELS = ("ticker", "miniTicker", "bookTicker", "trade")
_REPEAT_EVERY = 1.0  # seconds


class Streams:
    """WebSocket handlers; every open socket is tracked so faults can drop them all."""

    def __init__(
        self, exchange: SimulatedExchange, api_keys: dict[str, str], dice: FaultDice
    ) -> None:
        self.exchange = exchange
        self.api_keys = api_keys
        self.dice = dice
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
        for ws in sockets:
            await ws.close(code=1011, message=b"dropped by fault injection")
        return len(sockets)

    async def _open(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.add(ws)
        self.connections += 1
        return ws

    async def _serve(
        self,
        ws: web.WebSocketResponse,
        on_message: Callable[[Json, dict[str, asyncio.Task[None]]], Awaitable[None]],
        pumps: dict[str, asyncio.Task[None]],
    ) -> None:
        """Read messages until the socket closes or the drop fault fires; then clean up."""
        drop_after = self.dice.faults.ws_drop_after
        try:
            async with asyncio.timeout(drop_after if drop_after > 0 else None):
                async for msg in ws:
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
            if not ws.closed:
                await ws.close(code=1011, message=b"dropped by fault injection")
            self.sockets.discard(ws)

    # -- market streams ----------------------------------------------------------------

    async def market(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._open(request)
        pumps: dict[str, asyncio.Task[None]] = {}
        stream = request.match_info.get("stream", "")
        if "@" in stream:  # /ws/<symbol>@<channel>: subscribed by the URL
            self._subscribe(ws, stream, pumps)

        async def on_message(data: Json, pumps: dict[str, asyncio.Task[None]]) -> None:
            method = data.get("method")
            params = data.get("params") or []
            if method == "SUBSCRIBE":
                for name in params:
                    self._subscribe(ws, str(name), pumps)
                await ws.send_json({"result": None, "id": data.get("id")})
            elif method == "UNSUBSCRIBE":
                for name in params:
                    task = pumps.pop(str(name), None)
                    if task is not None:
                        task.cancel()
                await ws.send_json({"result": None, "id": data.get("id")})
            elif method == "LIST_SUBSCRIPTIONS":
                await ws.send_json({"result": sorted(pumps), "id": data.get("id")})
            else:
                error = {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}
                await ws.send_json({"error": error, "id": data.get("id")})

        await self._serve(ws, on_message, pumps)
        return ws

    def _subscribe(
        self, ws: web.WebSocketResponse, name: str, pumps: dict[str, asyncio.Task[None]]
    ) -> None:
        market, _, channel = name.partition("@")
        symbol = next(
            (s for s in self.exchange.symbols if compact_symbol(s).lower() == market.lower()),
            None,
        )
        if symbol is None or channel not in _CHANNELS or name in pumps:
            return
        pumps[name] = asyncio.create_task(self._pump_ticks(ws, symbol, channel))

    async def _pump_ticks(self, ws: web.WebSocketResponse, symbol: str, channel: str) -> None:
        """Every price change, and the last price again each second without one (Binance
        pushes the ticker stream every 1000 ms whether the price moved or not)."""
        engine = self.exchange.engine
        rules = engine.rules(symbol)
        ticks = self.exchange.watch_ticks(symbol)
        with contextlib.suppress(ConnectionError, RuntimeError, StopAsyncIteration):
            while not ws.closed:
                price = engine.last_price(symbol)
                if price is not None:
                    await ws.send_json(_market_event(channel, rules, price))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_REPEAT_EVERY):
                        await anext(ticks)

    # -- WebSocket API (user data) -----------------------------------------------------

    async def ws_api(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._open(request)
        pumps: dict[str, asyncio.Task[None]] = {}

        async def on_message(data: Json, pumps: dict[str, asyncio.Task[None]]) -> None:
            request_id = data.get("id")
            if self.dice.faults.latency > 0:
                await asyncio.sleep(self.dice.faults.latency)
            try:
                result = self._ws_call(ws, data, pumps)
            except ApiError as exc:
                await ws.send_json({"id": request_id, "status": exc.status, "error": exc.body()})
                return
            await ws.send_json({"id": request_id, "status": 200, "result": result})

        await self._serve(ws, on_message, pumps)
        return ws

    def _ws_call(
        self, ws: web.WebSocketResponse, data: Json, pumps: dict[str, asyncio.Task[None]]
    ) -> Any:
        method = data.get("method")
        params = data.get("params") or {}
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": now_ms()}
        if method == "userDataStream.subscribe.signature":
            secret = self.api_keys.get(str(params.get("apiKey", "")))
            if secret is None:
                raise wire.INVALID_KEY
            wire.check_timestamp({k: str(v) for k, v in params.items()}, now_ms())
            wire.check_ws_signature(secret, params)
            subscription = len(pumps)
            for symbol in self.exchange.symbols:
                key = f"{subscription}:{symbol}"
                pumps[key] = asyncio.create_task(self._pump_orders(ws, subscription, symbol))
            return {"subscriptionId": subscription}
        raise ApiError(400, -1020, "This operation is not supported.")

    async def _pump_orders(self, ws: web.WebSocketResponse, subscription: int, symbol: str) -> None:
        updates = self.exchange.watch_orders(symbol)
        with contextlib.suppress(ConnectionError, RuntimeError):
            async for update in updates:
                if ws.closed:
                    return
                fills = update.fills or (None,)
                for fill in fills:
                    event = wire.execution_report(update.order, fill, now_ms())
                    await ws.send_json({"subscriptionId": subscription, "event": event})


def _market_event(channel: str, rules: Any, price: Any) -> Json:
    ms = now_ms()
    ticker = wire.ticker_event(rules, price, ms)
    if channel == "bookTicker":
        return {"u": ms, **{k: ticker[k] for k in ("s", "b", "B", "a", "A")}}
    if channel == "trade":
        return {
            "e": "trade", "E": ms, "s": ticker["s"], "t": ms, "p": ticker["c"], "q": "0.001",
            "T": ms, "m": False, "M": True,
        }  # fmt: skip
    if channel == "miniTicker":
        mini = ("s", "c", "o", "h", "l", "v", "q")
        return {"e": "24hrMiniTicker", "E": ms, **{k: ticker[k] for k in mini}}
    return ticker
