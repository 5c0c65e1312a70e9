"""The simulator enforces request expiry as Binance does: every signed REST call and
WebSocket API method is refused with -1021 when its ``timestamp`` is older than its
``recvWindow`` or more than 1 s ahead of the server clock, checked when the request is
processed (after any injected latency); a refused create or cancel changes nothing and is
logged as rejected with -1021. The server clock can run skewed from the wall clock."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt
import pytest

from quantmesh.exchange.sim.markets import build_simulated
from quantmesh.exchange.sim.server import binance as wire
from quantmesh.exchange.sim.server.clock import ServerClock
from quantmesh.exchange.sim.server.faults import FaultDice, Faults
from quantmesh.exchange.sim.server.market_data import MarketData
from quantmesh.exchange.sim.server.rest import RestApi
from quantmesh.exchange.sim.server.streams import Streams
from tests.cli.support import plain_lines, run_cli

from .support import API_KEY, API_SECRET, SimProcess, binance_client, running_sim

# Every /api/v3 route, by the security Binance gives it. A new route must be added to one
# of these (test_every_route_is_classified), and every SIGNED one is checked for expiry.
PUBLIC = {
    "GET /api/v3/ping",
    "GET /api/v3/time",
    "GET /api/v3/exchangeInfo",
    "GET /api/v3/ticker/24hr",
    "GET /api/v3/ticker/price",
    "GET /api/v3/ticker/bookTicker",
    "GET /api/v3/depth",
}
API_KEY_ONLY = {  # USER_STREAM: the key, no timestamp, no signature
    "POST /api/v3/userDataStream",
    "PUT /api/v3/userDataStream",
    "DELETE /api/v3/userDataStream",
}
SIGNED = {
    "POST /api/v3/order",
    "GET /api/v3/order",
    "DELETE /api/v3/order",
    "GET /api/v3/openOrders",
    "GET /api/v3/allOrders",
    "GET /api/v3/myTrades",
    "GET /api/v3/account",
}


def cid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture(autouse=True)
def _no_skew(sim: SimProcess) -> Iterator[None]:
    set_skew(sim, 0)
    yield
    set_skew(sim, 0)


def set_skew(sim: SimProcess, seconds: float) -> None:
    sim._call("POST", "/_sim/clock", {"skew": seconds})


def server_ms(sim: SimProcess) -> int:
    result: int = sim._call("GET", "/api/v3/time")["serverTime"]
    return result


def expired_counts(sim: SimProcess) -> dict[str, int]:
    result: dict[str, int] = sim.stats()["expired"]  # type: ignore[assignment]
    return result


def signed(
    sim: SimProcess,
    route: str,
    params: dict[str, str],
    timestamp: int,
    recv_window: str | None = None,
) -> tuple[int, Any]:
    """A signed REST call as a plain HTTP request: its status and JSON body."""
    method, path = route.split(" ", 1)
    sent = {**params, "timestamp": str(timestamp)}
    if recv_window is not None:
        sent["recvWindow"] = recv_window
    query = urlencode(sent)
    query += f"&signature={wire.sign(API_SECRET, query)}"
    request = urllib.request.Request(
        f"{sim.url}{path}?{query}", method=method, headers={"X-MBX-APIKEY": API_KEY}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def create_params(client_order_id: str, price: str = "1500") -> dict[str, str]:
    return {
        "symbol": "ETHUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01",
        "price": price,
        "newClientOrderId": client_order_id,
    }


def route_params(route: str, order_id: str) -> dict[str, str]:
    """Parameters that make ``route`` succeed (``order_id``: an open order's client id)."""
    if route == "POST /api/v3/order":
        return create_params(cid("route"))
    if route in ("GET /api/v3/order", "DELETE /api/v3/order"):
        return {"symbol": "ETHUSDT", "origClientOrderId": order_id}
    if route == "GET /api/v3/account":
        return {}
    return {"symbol": "ETHUSDT"}


def of(sim: SimProcess, client_order_id: str, what: str = "orders") -> list[dict[str, Any]]:
    records = sim.orders() if what == "orders" else sim.actions()
    return [r for r in records if r["client_order_id"] == client_order_id]


def place(sim: SimProcess) -> str:
    order_id = cid("open")
    status, body = signed(sim, "POST /api/v3/order", create_params(order_id), server_ms(sim))
    assert status == 200, body
    return order_id


def in_process_api() -> RestApi:
    """The simulator's handlers, built but not served: their route and method tables."""
    from quantmesh.config.schema import SimulatedExchangeSettings

    settings = SimulatedExchangeSettings.model_validate({"markets": {"ETH/USDT": {"price": 1}}})
    return RestApi(build_simulated(settings, None), {}, FaultDice(Faults()), ServerClock())


def test_every_route_is_classified() -> None:
    routes = {f"{r.method} {r.path}" for r in in_process_api().routes()}
    assert routes == PUBLIC | API_KEY_ONLY | SIGNED


@pytest.mark.parametrize("route", sorted(SIGNED))
def test_every_signed_route_refuses_an_old_or_future_timestamp(sim: SimProcess, route: str) -> None:
    order_id = place(sim)
    params = route_params(route, order_id)
    before = expired_counts(sim).get(route, 0)
    for timestamp in (server_ms(sim) - 6000, server_ms(sim) + 3000):
        status, body = signed(sim, route, params, timestamp)
        assert (status, body["code"]) == (400, -1021), body
    assert expired_counts(sim).get(route, 0) == before + 2
    (order,) = of(sim, order_id)
    assert order["status"] == "open"  # neither refused call changed it
    status, body = signed(sim, route, params, server_ms(sim) - 4000)  # inside 5 s
    assert status == 200, body
    status, body = signed(sim, route, params, server_ms(sim) + 500)  # less than 1 s ahead
    assert status == 200 or body["code"] in (-2011, -2010), body  # cancelled/placed already


def test_a_refused_create_leaves_nothing_and_is_logged(sim: SimProcess) -> None:
    order_id = cid("late")
    before = sim.trades()
    status, body = signed(
        sim, "POST /api/v3/order", create_params(order_id, "2010"), server_ms(sim) - 20_000
    )
    assert (status, body["code"]) == (400, -1021)
    assert "recvWindow" in body["msg"]
    assert of(sim, order_id) == []  # marketable at 2010: accepted, it would have filled
    assert sim.trades() == before
    (action,) = of(sim, order_id, "actions")
    assert (action["action"], action["api_key"], action["result"], action["code"]) == (
        "create",
        API_KEY,
        "rejected",
        -1021,
    )
    assert action["exchange_order_id"] is None
    assert (action["symbol"], action["side"], action["price"]) == ("ETH/USDT", "buy", "2010")


def test_a_refused_cancel_leaves_the_order_open_and_is_logged(sim: SimProcess) -> None:
    order_id = place(sim)
    params = {"symbol": "ETHUSDT", "origClientOrderId": order_id}
    status, body = signed(sim, "DELETE /api/v3/order", params, server_ms(sim) + 5000)
    assert (status, body["code"]) == (400, -1021) and "ahead" in body["msg"]
    (order,) = of(sim, order_id)
    assert order["status"] == "open"
    create, cancel = of(sim, order_id, "actions")
    assert create["result"] == "accepted"
    assert (cancel["action"], cancel["result"], cancel["code"]) == ("cancel", "rejected", -1021)
    status, _ = signed(sim, "DELETE /api/v3/order", params, server_ms(sim))
    assert status == 200


def test_recv_window_with_decimals_and_its_bounds(sim: SimProcess) -> None:
    params = {"symbol": "ETHUSDT"}
    now = server_ms(sim)
    assert signed(sim, "GET /api/v3/openOrders", params, now - 2000, "5000.125")[0] == 200
    for window, code in (("1000.5", -1021), ("5000.1234", -1100), ("60000.001", -1131)):
        status, body = signed(sim, "GET /api/v3/openOrders", params, now - 3000, window)
        assert (status, body["code"]) == (400, code), window
    assert signed(sim, "GET /api/v3/openOrders", params, now - 59_000, "60000")[0] == 200


def test_the_check_is_made_after_the_injected_latency(sim: SimProcess) -> None:
    """Valid when sent, expired when processed: refused, as a matching engine would."""
    sim.faults(latency=1.5)
    order_id = cid("slow")
    status, body = signed(
        sim, "POST /api/v3/order", create_params(order_id), server_ms(sim), "1000"
    )
    assert (status, body["code"]) == (400, -1021)
    assert of(sim, order_id) == []
    (action,) = of(sim, order_id, "actions")
    assert (action["result"], action["code"]) == ("rejected", -1021)
    # The same latency inside a longer window: accepted.
    order_id = cid("slow")
    status, body = signed(
        sim, "POST /api/v3/order", create_params(order_id), server_ms(sim), "4000"
    )
    assert status == 200, body
    sim.reset_faults()
    status, _ = signed(
        sim,
        "DELETE /api/v3/order",
        {"symbol": "ETHUSDT", "origClientOrderId": order_id},
        server_ms(sim),
    )
    assert status == 200


def test_clock_skew_moves_server_time_and_every_check(sim: SimProcess) -> None:
    set_skew(sim, 30)
    local = int(time.time() * 1000)
    assert 29_000 < server_ms(sim) - local < 31_000
    clock = sim._call("GET", "/_sim/clock")
    assert clock["skew"] == 30
    # Signed with the local clock: 30 s behind the exchange's, outside the window.
    status, body = signed(sim, "GET /api/v3/account", {}, int(time.time() * 1000))
    assert (status, body["code"]) == (400, -1021)
    # Signed with the exchange's clock: accepted.
    assert signed(sim, "GET /api/v3/account", {}, int(time.time() * 1000) + 30_000)[0] == 200
    set_skew(sim, -30)
    assert -31_000 < server_ms(sim) - int(time.time() * 1000) < -29_000
    status, body = signed(sim, "GET /api/v3/account", {}, int(time.time() * 1000))
    assert (status, body["code"]) == (400, -1021) and "ahead" in body["msg"]


def test_a_bad_skew_is_refused(sim: SimProcess) -> None:
    for bad in ("5", None, True):
        request = urllib.request.Request(
            f"{sim.url}/_sim/clock", data=json.dumps({"skew": bad}).encode(), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        with caught.value:
            assert caught.value.code == 400
    assert sim._call("GET", "/_sim/clock")["skew"] == 0


# -- ccxt's own binance class ---------------------------------------------------------


@pytest.fixture
async def client(sim: SimProcess) -> AsyncIterator[Any]:
    c = binance_client(sim.port)
    try:
        await c.load_markets()
        yield c
    finally:
        await c.close()


async def test_ccxt_requests_signed_out_of_window_raise_invalid_nonce(
    sim: SimProcess, client: Any
) -> None:
    order_id = cid("ccxt")
    placed = await client.create_order(
        "ETH/USDT", "limit", "buy", "0.01", "1500", {"clientOrderId": order_id}
    )
    by_id = {"clientOrderId": order_id}
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "create": lambda: client.create_order(
            "ETH/USDT", "limit", "buy", "0.01", "1500", {"clientOrderId": cid("ccxt")}
        ),
        "cancel": lambda: client.cancel_order("", "ETH/USDT", by_id),
        "fetch_order": lambda: client.fetch_order(placed["id"], "ETH/USDT"),
        "open_orders": lambda: client.fetch_open_orders("ETH/USDT"),
        "all_orders": lambda: client.fetch_orders("ETH/USDT"),
        "my_trades": lambda: client.fetch_my_trades("ETH/USDT"),
        "balance": lambda: client.fetch_balance(),
    }
    # ccxt signs with milliseconds() - timeDifference; its recvWindow is 10 s.
    for difference in (11_000, -1_500):  # 11 s old, 1.5 s ahead
        client.options["timeDifference"] = difference
        accepted = []
        for name, call in calls.items():
            try:
                await call()
            except ccxt.InvalidNonce:
                continue
            accepted.append(name)
        assert accepted == [], (difference, accepted)
    client.options["timeDifference"] = 9_000  # old, and inside the 10 s window
    for call in calls.values():
        await call()
    assert [o["status"] for o in sim.orders() if o["client_order_id"] == order_id] == ["canceled"]
    refused = [a for a in sim.actions() if a["code"] == -1021 and a["api_key"] == API_KEY]
    assert len([a for a in refused if a["client_order_id"] == order_id]) == 2  # the cancels
    late = [a for a in refused if a["action"] == "create" and a["client_order_id"][:5] == "ccxt-"]
    assert len(late) == 2
    for action in late:
        assert of(sim, action["client_order_id"]) == []
    for order in sim.orders():  # the orders the accepted creates placed
        if order["status"] == "open" and order["client_order_id"].startswith("ccxt-"):
            await client.cancel_order("", "ETH/USDT", {"clientOrderId": order["client_order_id"]})


async def test_ccxt_measures_the_skew_and_then_trades(sim: SimProcess, client: Any) -> None:
    set_skew(sim, -45)
    with pytest.raises(ccxt.InvalidNonce):
        await client.fetch_balance()
    difference = await client.load_time_difference()
    assert 44_000 < difference < 46_000  # ccxt subtracts it from its clock
    await client.fetch_balance()


async def test_ccxt_websocket_api_methods_are_checked(sim: SimProcess, client: Any) -> None:
    order_id = cid("ws")
    placed = await client.create_order_ws(
        "ETH/USDT", "limit", "buy", "0.01", "1500", {"clientOrderId": order_id}
    )
    assert placed["clientOrderId"] == order_id and placed["status"] == "open"
    assert (await client.fetch_order_ws(placed["id"], "ETH/USDT"))["clientOrderId"] == order_id
    assert order_id in {o["clientOrderId"] for o in await client.fetch_open_orders_ws("ETH/USDT")}
    # ccxt parses no spot balances from account.status (no account type): read its info
    balances = (await client.fetch_balance_ws())["info"]["balances"]
    assert any(b["asset"] == "USDT" and float(b["locked"]) > 0 for b in balances)

    client.options["timeDifference"] = 11_000
    late_id = cid("ws")
    with pytest.raises(ccxt.InvalidNonce):
        await client.create_order_ws(
            "ETH/USDT", "limit", "buy", "0.01", "1500", {"clientOrderId": late_id}
        )
    with pytest.raises(ccxt.InvalidNonce):
        await client.cancel_order_ws(placed["id"], "ETH/USDT")
    with pytest.raises(ccxt.InvalidNonce):
        await client.fetch_order_ws(placed["id"], "ETH/USDT")
    with pytest.raises(ccxt.InvalidNonce):
        await client.fetch_open_orders_ws("ETH/USDT")
    with pytest.raises(ccxt.InvalidNonce):
        await client.fetch_balance_ws()
    assert of(sim, late_id) == []
    (late,) = of(sim, late_id, "actions")
    assert (late["action"], late["result"], late["code"]) == ("create", "rejected", -1021)
    (order,) = of(sim, order_id)
    assert order["status"] == "open"
    counts = expired_counts(sim)
    for method in ("order.place", "order.cancel", "order.status", "openOrders.status"):
        assert counts.get(method, 0) >= 1, counts

    client.options["timeDifference"] = 0
    cancelled = await client.cancel_order_ws(placed["id"], "ETH/USDT")
    assert cancelled["status"] == "canceled"
    # The refused cancel names the order by the exchange id it was sent with.
    mine = [a for a in sim.actions() if placed["id"] in (a["exchange_order_id"],)]
    create, refused, cancel = mine
    assert [a["action"] for a in mine] == ["create", "cancel", "cancel"]
    assert [a["result"] for a in (create, refused, cancel)] == ["accepted", "rejected", "accepted"]


async def _ws_api(sim: SimProcess, method: str, params: dict[str, Any]) -> dict[str, Any]:
    sent = {**params, "apiKey": API_KEY}
    sent["signature"] = wire.sign(API_SECRET, wire.ws_payload(sent))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{sim.port}/ws-api/v3") as ws,
    ):
        await ws.send_json({"id": "1", "method": method, "params": sent})
        answer: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), 10)
        return answer


def _ws_methods() -> list[str]:
    api = in_process_api()
    market_data = MarketData(api.exchange, api.clock)
    return sorted(Streams(api.exchange, api, api.dice, market_data).signed_methods)


@pytest.mark.parametrize("method", _ws_methods())
async def test_every_signed_websocket_method_refuses_an_expired_request(
    sim: SimProcess, method: str
) -> None:
    order_id = cid("wsm")
    params = {"symbol": "ETHUSDT", "origClientOrderId": order_id}
    if method == "order.place":
        params = {k: v for k, v in create_params(order_id).items()}
    for timestamp in (server_ms(sim) - 6000, server_ms(sim) + 2000):
        answer = await _ws_api(sim, method, {**params, "timestamp": timestamp})
        assert answer["status"] == 400 and answer["error"]["code"] == -1021, answer
    assert of(sim, order_id) == []
    assert expired_counts(sim).get(method, 0) >= 2


async def test_a_websocket_request_is_checked_after_the_latency(sim: SimProcess) -> None:
    sim.faults(latency=1.5)
    order_id = cid("wslow")
    params = {**create_params(order_id), "timestamp": server_ms(sim), "recvWindow": 1000}
    answer = await _ws_api(sim, "order.place", params)
    assert answer["error"]["code"] == -1021, answer
    assert of(sim, order_id) == []


# -- the --clock-skew flag, its variable and its config key ---------------------------


@pytest.mark.parametrize("where", ["flag", "env", "config"])
def test_clock_skew_from_flag_environment_or_config(tmp_path: Path, where: str) -> None:
    args: list[str] = []
    env: dict[str, str] = {}
    if where == "flag":
        args = ["--clock-skew", "-20"]
    elif where == "env":
        env = {"QM_SIM_CLOCK_SKEW": "-20"}
    else:
        extra = tmp_path / "extra.yaml"
        extra.write_text("clock_skew: -20\nbalances: {USDT: 5}\n", encoding="utf-8")
        args = ["--config", str(extra)]
    with running_sim(tmp_path, *args, env=env) as process:
        assert process._call("GET", "/_sim/clock")["skew"] == -20
        assert -21_000 < server_ms(process) - int(time.time() * 1000) < -19_000


def test_the_flag_wins_over_the_environment(tmp_path: Path) -> None:
    env = {"QM_SIM_CLOCK_SKEW": "50"}
    with running_sim(tmp_path, "--clock-skew", "2.5", env=env) as process:
        assert process._call("GET", "/_sim/clock")["skew"] == 2.5


@pytest.mark.parametrize("value", ["abc", "nan", "inf"])
def test_a_bad_skew_variable_exits_2_with_one_line(tmp_path: Path, value: str) -> None:
    result = run_cli(["sim-exchange", "--port", "0"], tmp_path, env={"QM_SIM_CLOCK_SKEW": value})
    assert result.returncode == 2, result.stderr
    lines = plain_lines(result.stderr)
    assert len(lines) == 1 and "QM_SIM_CLOCK_SKEW" in lines[0], result.stderr
