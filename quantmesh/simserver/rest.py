"""The Binance spot REST subset ccxt's ``binance`` class uses, served from a
``SimulatedExchange`` (the same engine, feeds and state file as the in-process one).

Several API keys may be accepted, each with its own secret. Every order create and cancel
request that reaches its handler is appended to an action log with the API key it came
with, whether it was accepted or not; the key that created each order is remembered. Both
live in memory only (an order restored from a state file has no known key). Requests
answered by an injected fault (503, 429) never reach a handler and are not logged.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web

from quantmesh.domain import MarketRules, Order, OrderRequest
from quantmesh.errors import (
    Disconnected,
    DuplicateOrder,
    InsufficientFunds,
    InvalidOrder,
    MarketNotFound,
    OrderNotFound,
)
from quantmesh.exchange.matching import MatchingEngine
from quantmesh.exchange.simulated import SimulatedExchange
from quantmesh.simserver import binance as wire
from quantmesh.simserver.binance import ApiError, Json
from quantmesh.simserver.faults import FaultDice

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Action:
    """One order create or cancel request, filled in as far as the request got."""

    api_key: str | None  # as sent: not yet checked when the request is refused for it
    action: Literal["create", "cancel"]
    symbol: str | None = None
    client_order_id: str | None = None
    exchange_order_id: str | None = None
    side: str | None = None
    price: str | None = None

    def about(self, order: Order) -> None:
        self.symbol = order.symbol
        self.client_order_id = order.client_order_id
        self.exchange_order_id = order.exchange_order_id
        self.side = order.side
        self.price = f"{order.price:f}"

    def record(self, accepted: bool, code: int | None) -> Json:
        """The ``/_sim/actions`` entry. ``code`` is the Binance error code the client was
        answered with; an accepted action with a code (-1001: the state file could not be
        written) changed the engine although the client got an error."""
        return {
            "t": time.time(),
            "api_key": self.api_key,
            "action": self.action,
            "symbol": self.symbol,
            "client_order_id": self.client_order_id,
            "exchange_order_id": self.exchange_order_id,
            "side": self.side,
            "price": self.price,
            "result": "accepted" if accepted else "rejected",
            "code": code,
        }


class RestApi:
    """Request handlers; ``routes()`` lists them for the application."""

    def __init__(
        self, exchange: SimulatedExchange, api_keys: dict[str, str], dice: FaultDice
    ) -> None:
        self.exchange = exchange
        self.api_keys = api_keys
        self.dice = dice
        self.listen_keys: set[str] = set()
        self.requests = 0  # /api/ calls received, for tests
        self.actions: list[Json] = []  # every create and cancel handled, in order
        self.owners: dict[str, str] = {}  # exchange order id -> API key that created it

    @property
    def engine(self) -> MatchingEngine:
        return self.exchange.engine

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v3"
        return [
            web.get(f"{p}/ping", self.ping),
            web.get(f"{p}/time", self.server_time),
            web.get(f"{p}/exchangeInfo", self.exchange_info),
            web.get(f"{p}/ticker/24hr", self.ticker_24hr),
            web.get(f"{p}/ticker/price", self.ticker_price),
            web.get(f"{p}/ticker/bookTicker", self.book_ticker),
            web.get(f"{p}/depth", self.depth),
            web.post(f"{p}/order", self.new_order),
            web.get(f"{p}/order", self.get_order),
            web.delete(f"{p}/order", self.cancel_order),
            web.get(f"{p}/openOrders", self.open_orders),
            web.get(f"{p}/allOrders", self.all_orders),
            web.get(f"{p}/myTrades", self.my_trades),
            web.get(f"{p}/account", self.account),
            web.post(f"{p}/userDataStream", self.listen_key_new),
            web.put(f"{p}/userDataStream", self.listen_key_keep),
            web.delete(f"{p}/userDataStream", self.listen_key_keep),
        ]

    # -- middleware ------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Faults first (latency, 503, 429), then Binance error bodies for ``ApiError``."""
        if not request.path.startswith("/api/"):
            return await handler(request)
        self.requests += 1
        faults = self.dice.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        outcome = self.dice.call()
        try:
            if outcome == "server_error":  # a gateway error: no JSON body, like Binance's
                return web.Response(status=503, text="Service Unavailable")
            if outcome == "rate_limited":
                raise wire.TOO_MANY_REQUESTS
            return await handler(request)
        except ApiError as exc:
            headers = {}
            if exc.status == 429:
                headers["Retry-After"] = f"{max(1, round(faults.retry_after))}"
            return web.json_response(exc.body(), status=exc.status, headers=headers)
        except Disconnected as exc:  # the state file cannot be written
            return web.json_response({"code": -1001, "msg": str(exc)}, status=503)

    # -- helpers -----------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[str, str, dict[str, str]]:
        """The query, the body and the parameters of both, unchecked."""
        query = request.rel_url.raw_query_string
        body = await request.text() if request.body_exists else ""
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        return query, body, params

    async def _signed(self, request: web.Request) -> dict[str, str]:
        """The parameters of a signed call, after the key, timestamp and signature checks."""
        secret = self.api_keys.get(request.headers.get("X-MBX-APIKEY", ""))
        if secret is None:
            raise wire.INVALID_KEY
        query, body, params = await self._params(request)
        wire.check_timestamp(params, now_ms())
        wire.check_signature(secret, query, body)
        return params

    async def _action(
        self, request: web.Request, kind: Literal["create", "cancel"]
    ) -> tuple[Action, dict[str, str]]:
        """The action log entry of a create or cancel, from its (still unchecked) params."""
        _, _, params = await self._params(request)
        action = Action(request.headers.get("X-MBX-APIKEY") or None, kind)
        compact = params.get("symbol", "")
        action.symbol = next(
            (r.symbol for r in self._markets() if r.symbol.replace("/", "") == compact.upper()),
            compact or None,
        )
        side = params.get("side", "").lower()
        action.side = side if side in ("buy", "sell") else None
        action.price = params.get("price") or None
        if kind == "create":
            cid = params.get("newClientOrderId") or f"sim-{secrets.token_hex(8)}"
            params["newClientOrderId"] = action.client_order_id = cid
        else:
            action.client_order_id = params.get("origClientOrderId") or None
            action.exchange_order_id = params.get("orderId") or None
        return action, params

    def _log(self, action: Action, accepted: bool, code: int | None = None) -> None:
        self.actions.append(action.record(accepted, code))

    def _symbol(self, params: dict[str, str], required: bool = True) -> str | None:
        compact = params.get("symbol")
        if not compact:
            if required:
                raise wire.missing("symbol")
            return None
        for rules in self._markets():
            if rules.symbol.replace("/", "") == compact.upper():
                return rules.symbol
        raise wire.BAD_SYMBOL

    def _markets(self) -> list[MarketRules]:
        return [self.engine.rules(s) for s in self._symbols()]

    def _symbols(self) -> list[str]:
        return self.exchange.symbols

    def _price(self, symbol: str) -> Decimal:
        price = self.engine.last_price(symbol)
        assert price is not None  # set at start
        return Decimal(price)

    def _find(self, symbol: str, params: dict[str, str]) -> Order:
        """The order named by ``orderId`` or ``origClientOrderId``."""
        if params.get("orderId"):
            wanted = params["orderId"]
            for order in self.engine.all_orders():
                if order.exchange_order_id == wanted and order.symbol == symbol:
                    return order
            raise wire.UNKNOWN_ORDER
        cid = params.get("origClientOrderId")
        if not cid:
            raise wire.missing("orderId")
        try:
            return self.engine.get(symbol, cid)
        except OrderNotFound:
            raise wire.UNKNOWN_ORDER from None

    # -- public ------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def server_time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(wire.exchange_info(self._markets(), now_ms()))

    def _tickers(self, request: web.Request, build: Callable[[MarketRules, Decimal], Json]) -> Any:
        symbol = self._symbol(dict(request.query), required=False)
        if symbol is not None:
            return build(self.engine.rules(symbol), self._price(symbol))
        return [build(self.engine.rules(s), self._price(s)) for s in self._symbols()]

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        ms = now_ms()
        return web.json_response(self._tickers(request, lambda r, p: wire.ticker_24hr(r, p, ms)))

    async def ticker_price(self, request: web.Request) -> web.Response:
        def build(rules: MarketRules, price: Decimal) -> Json:
            return {"symbol": rules.symbol.replace("/", ""), "price": f"{price:f}"}

        return web.json_response(self._tickers(request, build))

    async def book_ticker(self, request: web.Request) -> web.Response:
        def build(rules: MarketRules, price: Decimal) -> Json:
            t = wire.ticker_24hr(rules, price, now_ms())
            keys = ("symbol", "bidPrice", "bidQty", "askPrice", "askQty")
            return {k: t[k] for k in keys}

        return web.json_response(self._tickers(request, build))

    async def depth(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        symbol = self._symbol(params)
        assert symbol is not None
        limit = int(params.get("limit", "100"))
        rules = self.engine.rules(symbol)
        return web.json_response(wire.depth(rules, self._price(symbol), limit, now_ms()))

    # -- orders ------------------------------------------------------------------------

    async def new_order(self, request: web.Request) -> web.Response:
        action, sent = await self._action(request, "create")
        cid = sent["newClientOrderId"]
        before = self._latest(action.symbol, cid)
        try:
            order = await self._create(request, cid)
        except ApiError as exc:
            self._log(action, accepted=False, code=exc.code)
            raise
        except Disconnected:
            # Refused before the engine, or accepted by it and then not saved.
            after = self._latest(action.symbol, cid)
            accepted = after is not None and (
                before is None or after.exchange_order_id != before.exchange_order_id
            )
            if after is not None and accepted:
                if action.api_key is not None:
                    self.owners[after.exchange_order_id] = action.api_key
                action.about(after)
            self._log(action, accepted=accepted, code=-1001)
            raise
        if action.api_key is not None:
            self.owners[order.exchange_order_id] = action.api_key
        action.about(order)
        self._log(action, accepted=True)
        if self.dice.withhold_answer():
            # Accepted, and the client never hears about it: it times out first.
            await asyncio.sleep(self.dice.faults.hang)
        fills = self.engine.order_fills(order.symbol, cid) if order.filled else []
        return web.json_response(wire.new_order_json(order, fills))

    def _latest(self, symbol: str | None, client_order_id: str) -> Order | None:
        if symbol is None or symbol not in self._symbols():
            return None
        try:
            return self.engine.get(symbol, client_order_id)
        except OrderNotFound:
            return None

    async def _create(self, request: web.Request, cid: str) -> Order:
        """Check and place one new order (``cid``: the one sent, or one made up)."""
        params = await self._signed(request)
        symbol = self._symbol(params)
        assert symbol is not None
        if params.get("type", "").upper() != "LIMIT":
            raise ApiError(400, -1116, "Invalid orderType.")
        side = params.get("side", "").lower()
        if side not in ("buy", "sell"):
            raise ApiError(400, -1117, "Invalid side.")
        try:
            price = Decimal(params["price"])
            amount = Decimal(params["quantity"])
        except KeyError as exc:
            raise wire.missing(str(exc.args[0])) from None
        except InvalidOperation:
            raise ApiError(400, -1100, "Illegal characters found in a parameter.") from None
        request_ = OrderRequest(symbol, side, price, amount, cid)  # type: ignore[arg-type]
        try:
            return await self.exchange.create_order(request_)
        except DuplicateOrder:
            raise wire.DUPLICATE from None
        except InsufficientFunds:
            raise wire.INSUFFICIENT from None
        except InvalidOrder as exc:
            raise wire.rejection(exc) from None
        except MarketNotFound:
            raise wire.BAD_SYMBOL from None

    async def get_order(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        symbol = self._symbol(params)
        assert symbol is not None
        return web.json_response(wire.order_json(self._find(symbol, params)))

    async def cancel_order(self, request: web.Request) -> web.Response:
        action, _ = await self._action(request, "cancel")
        try:
            cancelled = await self._cancel(request, action)
        except ApiError as exc:
            self._log(action, accepted=False, code=exc.code)
            raise
        except Disconnected:
            # Refused before the engine, or cancelled by it and then not saved.
            order = None
            if action.client_order_id is not None:
                order = self._latest(action.symbol, action.client_order_id)
            accepted = order is not None and order.status == "canceled"
            self._log(action, accepted=accepted, code=-1001)
            raise
        self._log(action, accepted=True)
        body = wire.order_json(cancelled)
        body["origClientOrderId"] = cancelled.client_order_id
        return web.json_response(body)

    async def _cancel(self, request: web.Request, action: Action) -> Order:
        """Check and cancel one open order; ``action`` learns which order it named."""
        params = await self._signed(request)
        symbol = self._symbol(params)
        assert symbol is not None
        try:
            order = self._find(symbol, params)
        except ApiError:
            raise wire.CANCEL_UNKNOWN from None
        action.about(order)
        if not order.is_open:
            raise wire.CANCEL_UNKNOWN
        return await self.exchange.cancel_order(symbol, order.client_order_id)

    async def open_orders(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        symbol = self._symbol(params, required=False)
        symbols = [symbol] if symbol is not None else self._symbols()
        orders = [o for s in symbols for o in self.engine.open_orders(s)]
        return web.json_response([wire.order_json(o) for o in orders])

    async def all_orders(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        symbol = self._symbol(params)
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        from_id = int(params.get("orderId", "0"))
        limit = min(int(params.get("limit", "500")), 1000)
        orders = [
            o
            for o in self.engine.all_orders()
            if o.symbol == symbol
            and start <= int(o.created_at * 1000) <= end
            and int(o.exchange_order_id) >= from_id
        ]
        return web.json_response([wire.order_json(o) for o in orders[:limit]])

    async def my_trades(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        symbol = self._symbol(params)
        order_id = params.get("orderId")
        start = int(params.get("startTime", "0"))
        from_id = int(params.get("fromId", "0"))
        limit = min(int(params.get("limit", "500")), 1000)
        created = {o.exchange_order_id: o.created_at for o in self.engine.all_orders()}
        trades = [
            wire.trade_json(f, maker=f.ts > created.get(f.exchange_order_id, f.ts))
            for f in self.engine.fills()
            if f.symbol == symbol
            and (order_id is None or f.exchange_order_id == order_id)
            and int(f.ts * 1000) >= start
            and int(f.trade_id) >= from_id
        ]
        trades.sort(key=lambda t: t["id"])
        return web.json_response(trades[:limit])

    async def account(self, request: web.Request) -> web.Response:
        await self._signed(request)
        balances = [
            {"asset": a, "free": f"{b.free:f}", "locked": f"{b.locked:f}"}
            for a, b in self.engine.balances().items()
        ]
        fee = int(self.engine.fee_rate * 10000)
        return web.json_response(
            {
                "makerCommission": fee,
                "takerCommission": fee,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "canTrade": True,
                "canWithdraw": False,
                "canDeposit": False,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": now_ms(),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": 1,
            }
        )

    # -- legacy listen keys (the user stream itself is served on the WebSocket API) ----

    async def listen_key_new(self, request: web.Request) -> web.Response:
        if request.headers.get("X-MBX-APIKEY", "") not in self.api_keys:
            raise wire.INVALID_KEY
        key = secrets.token_hex(32)
        self.listen_keys.add(key)
        return web.json_response({"listenKey": key})

    async def listen_key_keep(self, request: web.Request) -> web.Response:
        if request.headers.get("X-MBX-APIKEY", "") not in self.api_keys:
            raise wire.INVALID_KEY
        return web.json_response({})
