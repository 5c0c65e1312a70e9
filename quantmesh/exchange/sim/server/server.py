"""The simulator server: REST, WebSockets and the ``/_sim`` test endpoints on one port.

The test endpoints are unauthenticated: the simulator is a testing tool and listens on
loopback by default.

- ``/_sim/orders``: every order ever accepted (duplicate checks by tests and chaos runs),
  with the API key that created it;
- ``/_sim/actions``: every order create and cancel request handled (accepted or
  rejected, with its API key);
- ``/_sim/trades``: every fill;
- ``/_sim/faults``: reads and changes the faults;
- ``/_sim/rate_limit``: a burst of 429s after a number of REST calls
  (``{"after": n, "count": k}``), for tests that need one at a known point;
- ``/_sim/price``: moves a price;
- ``/_sim/drop_ws``: closes every WebSocket;
- ``/_sim/clock``: reads and changes the server clock's skew (``{"skew": seconds}``);
- ``/_sim/stats``: counts requests, WebSockets and signed calls refused as expired
  (-1021), by call.

Times are wall-clock epoch seconds, the engine's clock: an order's ``created_at`` and
``closed_at``, a fill's ``ts`` and an action's ``t`` can be compared with each other. The
server clock that answers ``/api/v3/time`` and checks request expiry is that clock plus
the skew (``quantmesh.exchange.sim.server.clock``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from aiohttp import web

from quantmesh.domain import Fill, Order
from quantmesh.exchange.sim.server.clock import ServerClock
from quantmesh.exchange.sim.server.faults import FaultDice, Faults
from quantmesh.exchange.sim.server.market_data import MarketData
from quantmesh.exchange.sim.server.rest import RestApi
from quantmesh.exchange.sim.server.streams import Streams
from quantmesh.exchange.sim.simulated import SimulatedExchange

log = structlog.get_logger(__name__)


def order_record(order: Order, api_key: str | None = None) -> dict[str, Any]:
    """One ``/_sim/orders`` entry. ``api_key``: the key that created the order (None when
    unknown: an order restored from a state file). ``closed_at``: when the order left
    ``open`` - the engine changes a closed order no more, so its ``updated_at`` is that
    time (the fill, or the cancel); None while open."""
    return {
        "symbol": order.symbol,
        "side": order.side,
        "price": f"{order.price:f}",
        "amount": f"{order.amount:f}",
        "client_order_id": order.client_order_id,
        "exchange_order_id": order.exchange_order_id,
        "status": order.status,
        "filled": f"{order.filled:f}",
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "closed_at": None if order.is_open else order.updated_at,
        "api_key": api_key,
    }


def trade_record(fill: Fill, api_key: str | None = None) -> dict[str, Any]:
    """One ``/_sim/trades`` entry; ``api_key`` is the one of the order that filled."""
    return {
        "trade_id": fill.trade_id,
        "client_order_id": fill.client_order_id,
        "exchange_order_id": fill.exchange_order_id,
        "symbol": fill.symbol,
        "side": fill.side,
        "price": f"{fill.price:f}",
        "amount": f"{fill.amount:f}",
        "fee": f"{fill.fee:f}",
        "fee_currency": fill.fee_currency,
        "ts": fill.ts,
        "api_key": api_key,
    }


class SimServer:
    """A Binance-spot-compatible HTTP/WebSocket server around a ``SimulatedExchange``."""

    def __init__(
        self,
        exchange: SimulatedExchange,
        api_keys: dict[str, str],
        faults: Faults = Faults(),  # noqa: B008 - frozen, never mutated
        seed: int | None = None,
        clock_skew: float = 0.0,
    ) -> None:
        self.exchange = exchange
        self.dice = FaultDice(faults, seed)
        self.clock = ServerClock(clock_skew)
        self.rest = RestApi(exchange, api_keys, self.dice, self.clock)
        self.market_data = MarketData(exchange, self.clock, seed)  # markets once started
        self.streams = Streams(exchange, self.rest, self.dice, self.market_data)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.rest.middleware])
        app.add_routes(self.rest.routes())
        app.add_routes(self.streams.routes())
        app.add_routes(self.market_data.routes())
        app.add_routes(
            [
                web.get("/_sim/orders", self.orders),
                web.get("/_sim/actions", self.actions),
                web.get("/_sim/trades", self.trades),
                web.get("/_sim/faults", self.get_faults),
                web.post("/_sim/faults", self.set_faults),
                web.post("/_sim/rate_limit", self.rate_limit),
                web.post("/_sim/price", self.set_price),
                web.post("/_sim/drop_ws", self.drop_ws),
                web.get("/_sim/stats", self.stats),
                web.get("/_sim/clock", self.get_clock),
                web.post("/_sim/clock", self.set_clock),
            ]
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start the exchange (restoring its state) and listen; returns the bound port."""
        await self.exchange.start()
        self.market_data.start()
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("sim_server_listening", host=host, port=self.port)
        return self.port

    async def close(self) -> None:
        await self.market_data.close()
        await self.streams.drop_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.exchange.close()

    # -- test endpoints ----------------------------------------------------------------

    async def orders(self, request: web.Request) -> web.Response:
        owners = self.rest.owners
        return web.json_response(
            [
                order_record(o, owners.get(o.exchange_order_id))
                for o in self.exchange.engine.all_orders()
            ]
        )

    async def actions(self, request: web.Request) -> web.Response:
        return web.json_response(self.rest.actions)

    async def trades(self, request: web.Request) -> web.Response:
        owners = self.rest.owners
        fills = sorted(self.exchange.engine.fills(), key=lambda f: int(f.trade_id))
        return web.json_response([trade_record(f, owners.get(f.exchange_order_id)) for f in fills])

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.dice.faults.as_dict())

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            self.dice.faults = (
                Faults() if changes.pop("reset", False) else self.dice.faults
            ).updated(changes)
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("sim_faults_set", **self.dice.faults.as_dict())
        return web.json_response(self.dice.faults.as_dict())

    async def rate_limit(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            self.dice.burst(int(data.get("after", 0)), int(data["count"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return web.json_response({"error": repr(exc)}, status=400)
        return web.json_response({"ok": True})

    async def set_price(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            self.exchange.set_price(str(data["symbol"]), Decimal(str(data["price"])))
        except (ValueError, TypeError, KeyError, InvalidOperation) as exc:
            return web.json_response({"error": repr(exc)}, status=400)
        return web.json_response({"ok": True})

    async def drop_ws(self, request: web.Request) -> web.Response:
        return web.json_response({"dropped": await self.streams.drop_all()})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.rest.requests,
                "ws_connections": self.streams.connections,
                "expired": dict(self.clock.expired),
            }
        )

    async def get_clock(self, request: web.Request) -> web.Response:
        return web.json_response(self._clock())

    async def set_clock(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            skew = data["skew"]
            if isinstance(skew, bool):
                raise TypeError("skew must be a number of seconds")
            self.clock.skew = skew
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return web.json_response({"error": repr(exc)}, status=400)
        log.info("sim_clock_set", skew=self.clock.skew)
        return web.json_response(self._clock())

    def _clock(self) -> dict[str, Any]:
        return {"skew": self.clock.skew, "server_time_ms": self.clock.now_ms()}
