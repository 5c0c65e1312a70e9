"""The simulator's REST API: the Binance spot subset ccxt's ``binance`` class uses.

It is served from a ``SimulatedExchange`` (the same engine, feeds and state file as the
in-process one). Several API keys may be accepted, each with its own secret.

Every order create and cancel request that reaches its handler (by REST or the WebSocket
API) is appended to an action log:

- with the API key it came with, whether it was accepted or not, and the Binance code it
  was answered with; the key that created each order is remembered;
- both live in memory only (an order restored from a state file has no known key);
- requests answered by an injected fault (503, 429) never reach a handler and are not
  logged.

Every signed call - a ``SignedCall``, whichever transport it came by - passes
``RestApi.authenticate`` before it reads or changes anything: the API key, the expiry
(``timestamp`` + ``recvWindow`` on the server clock, when it arrived and again when it is
processed) and the signature. A refused call changes nothing; a refused create or cancel
is logged as rejected with its code (-1021 when it expired).
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

from quantmesh.domain import Fill, MarketRules, Order, OrderRequest
from quantmesh.errors import (
    Disconnected,
    DuplicateOrder,
    InsufficientFunds,
    InvalidOrder,
    MarketNotFound,
    OrderNotFound,
)
from quantmesh.exchange.sim.matching import MatchingEngine
from quantmesh.exchange.sim.server import binance as wire
from quantmesh.exchange.sim.server.binance import ApiError, Json
from quantmesh.exchange.sim.server.clock import ServerClock
from quantmesh.exchange.sim.server.faults import FaultDice
from quantmesh.exchange.sim.simulated import SimulatedExchange

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ARRIVED_US = "sim_arrived_us"  # request key: the server clock when the request arrived


@dataclass(frozen=True, slots=True)
class SignedCall:
    """A signed request as it arrived, by REST or the WebSocket API, not yet checked."""

    api_key: str | None  # as sent
    params: dict[str, str]
    arrived_us: int  # server clock
    name: str  # "GET /api/v3/order", "order.place": counts refusals by call
    verify: Callable[[str], None]  # ApiError unless signed with this secret


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
        self,
        exchange: SimulatedExchange,
        api_keys: dict[str, str],
        dice: FaultDice,
        clock: ServerClock | None = None,
    ) -> None:
        self.exchange = exchange
        self.api_keys = api_keys
        self.dice = dice
        self.clock = clock if clock is not None else ServerClock()
        self.listen_keys: set[str] = set()
        self.requests = 0  # /api/ calls received, for tests
        self.actions: list[Json] = []  # every create and cancel handled, in order
        self.owners: dict[str, str] = {}  # exchange order id -> API key that created it

    @property
    def engine(self) -> MatchingEngine:
        return self.exchange.engine

    def routes(self) -> list[web.RouteDef]:
        prefix = "/api/v3"
        return [
            web.get(f"{prefix}/ping", self.ping),
            web.get(f"{prefix}/time", self.server_time),
            web.get(f"{prefix}/exchangeInfo", self.exchange_info),
            web.get(f"{prefix}/ticker/24hr", self.ticker_24hr),
            web.get(f"{prefix}/ticker/price", self.ticker_price),
            web.get(f"{prefix}/ticker/bookTicker", self.book_ticker),
            web.get(f"{prefix}/depth", self.depth),
            web.post(f"{prefix}/order", self.new_order),
            web.get(f"{prefix}/order", self.get_order),
            web.delete(f"{prefix}/order", self.cancel_order),
            web.get(f"{prefix}/openOrders", self.open_orders),
            web.get(f"{prefix}/allOrders", self.all_orders),
            web.get(f"{prefix}/myTrades", self.my_trades),
            web.get(f"{prefix}/account", self.account),
            web.post(f"{prefix}/userDataStream", self.listen_key_new),
            web.put(f"{prefix}/userDataStream", self.listen_key_keep),
            web.delete(f"{prefix}/userDataStream", self.listen_key_keep),
        ]

    # -- middleware ------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Faults first (latency, 503, 429), then Binance error bodies for ``ApiError``."""
        if not request.path.startswith("/api/"):
            return await handler(request)
        request[ARRIVED_US] = self.clock.now_us()
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

    async def signed_call(self, request: web.Request) -> SignedCall:
        """A REST request as a signed call (checked by ``authenticate``)."""
        query, body, params = await self._params(request)

        def verify(secret: str) -> None:
            wire.check_signature(secret, query, body)

        return SignedCall(
            request.headers.get("X-MBX-APIKEY") or None,
            params,
            request.get(ARRIVED_US) or self.clock.now_us(),
            f"{request.method} {request.path}",
            verify,
        )

    def authenticate(self, call: SignedCall) -> dict[str, str]:
        """The parameters of ``call`` after the key, expiry and signature checks; checked
        here, at the moment the call is processed (after any injected latency)."""
        secret = self.api_keys.get(call.api_key or "")
        if secret is None:
            raise wire.INVALID_KEY
        self.clock.check(call.params, call.arrived_us, call.name)
        call.verify(secret)
        return call.params

    async def _signed(self, request: web.Request) -> dict[str, str]:
        """The parameters of a signed REST call, checked."""
        return self.authenticate(await self.signed_call(request))

    def _action(self, call: SignedCall, kind: Literal["create", "cancel"]) -> Action:
        """The action log entry of a create or cancel, from its (still unchecked) params;
        a create without a client order id is given one."""
        params = call.params
        action = Action(call.api_key, kind)
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
            action.client_order_id = cid
        else:
            action.client_order_id = params.get("origClientOrderId") or None
            action.exchange_order_id = params.get("orderId") or None
        return action

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
        return web.json_response({"serverTime": self.clock.now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(wire.exchange_info(self._markets(), self.clock.now_ms()))

    def _tickers(self, request: web.Request, build: Callable[[MarketRules, Decimal], Json]) -> Any:
        symbol = self._symbol(dict(request.query), required=False)
        if symbol is not None:
            return build(self.engine.rules(symbol), self._price(symbol))
        return [build(self.engine.rules(s), self._price(s)) for s in self._symbols()]

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        now_ms = self.clock.now_ms()
        return web.json_response(
            self._tickers(request, lambda r, p: wire.ticker_24hr(r, p, now_ms))
        )

    async def ticker_price(self, request: web.Request) -> web.Response:
        def build(rules: MarketRules, price: Decimal) -> Json:
            return {"symbol": rules.symbol.replace("/", ""), "price": f"{price:f}"}

        return web.json_response(self._tickers(request, build))

    async def book_ticker(self, request: web.Request) -> web.Response:
        def build(rules: MarketRules, price: Decimal) -> Json:
            ticker = wire.ticker_24hr(rules, price, self.clock.now_ms())
            keys = ("symbol", "bidPrice", "bidQty", "askPrice", "askQty")
            return {k: ticker[k] for k in keys}

        return web.json_response(self._tickers(request, build))

    async def depth(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        symbol = self._symbol(params)
        assert symbol is not None
        limit = int(params.get("limit", "100"))
        rules = self.engine.rules(symbol)
        return web.json_response(wire.depth(rules, self._price(symbol), limit, self.clock.now_ms()))

    # -- orders ------------------------------------------------------------------------

    async def new_order(self, request: web.Request) -> web.Response:
        order, fills = await self.place(await self.signed_call(request))
        if self.dice.withhold_answer():
            # Accepted, and the client never hears about it: it times out first.
            await asyncio.sleep(self.dice.faults.hang)
        return web.json_response(wire.new_order_json(order, fills))

    async def place(self, call: SignedCall) -> tuple[Order, list[Fill]]:
        """Check and place one new order, logged as an action; the order and its fills."""
        action = self._action(call, "create")
        cid = action.client_order_id
        assert cid is not None  # made up when not sent
        before = self._latest(action.symbol, cid)
        try:
            order = await self._create(call, cid)
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
        fills = self.engine.order_fills(order.symbol, cid) if order.filled else []
        return order, fills

    def _latest(self, symbol: str | None, client_order_id: str) -> Order | None:
        if symbol is None or symbol not in self._symbols():
            return None
        try:
            return self.engine.get(symbol, client_order_id)
        except OrderNotFound:
            return None

    async def _create(self, call: SignedCall, cid: str) -> Order:
        """Check and place one new order (``cid``: the one sent, or one made up)."""
        params = self.authenticate(call)
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
        return web.json_response(wire.order_json(self.query(await self.signed_call(request))))

    def query(self, call: SignedCall) -> Order:
        """Check and look up one order."""
        params = self.authenticate(call)
        symbol = self._symbol(params)
        assert symbol is not None
        return self._find(symbol, params)

    async def cancel_order(self, request: web.Request) -> web.Response:
        cancelled = await self.cancel(await self.signed_call(request))
        return web.json_response(wire.cancel_json(cancelled))

    async def cancel(self, call: SignedCall) -> Order:
        """Check and cancel one open order, logged as an action."""
        action = self._action(call, "cancel")
        try:
            cancelled = await self._cancel(call, action)
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
        return cancelled

    async def _cancel(self, call: SignedCall, action: Action) -> Order:
        """Check and cancel one open order; ``action`` learns which order it named."""
        params = self.authenticate(call)
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
        orders = self.open_orders_of(await self.signed_call(request))
        return web.json_response([wire.order_json(o) for o in orders])

    def open_orders_of(self, call: SignedCall) -> list[Order]:
        """Check, then every open order (of ``symbol`` when given)."""
        params = self.authenticate(call)
        symbol = self._symbol(params, required=False)
        symbols = [symbol] if symbol is not None else self._symbols()
        return [o for s in symbols for o in self.engine.open_orders(s)]

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
        return web.json_response(self.account_of(await self.signed_call(request)))

    def account_of(self, call: SignedCall) -> Json:
        """Check, then the account: balances and commissions."""
        self.authenticate(call)
        balances = [
            {"asset": a, "free": f"{b.free:f}", "locked": f"{b.locked:f}"}
            for a, b in self.engine.balances().items()
        ]
        fee = int(self.engine.fee_rate * 10000)
        return {
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
            "updateTime": self.clock.now_ms(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 1,
        }

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
