"""ccxt.pro's own ``binance`` class against the simulator process: no mocks."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import ccxt
import pytest

from .support import SimProcess, binance_client


def cid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


@pytest.fixture
async def client(sim: SimProcess) -> AsyncIterator[Any]:
    c = binance_client(sim.port)
    try:
        yield c
    finally:
        await c.close()


async def test_markets_carry_tick_lot_and_min_notional(client: Any) -> None:
    markets = await client.load_markets()
    eth = markets["ETH/USDT"]
    assert eth["precision"]["price"] == 0.01
    assert eth["precision"]["amount"] == 0.0001
    assert eth["limits"]["cost"]["min"] == 5
    assert set(markets) == {"ETH/USDT", "BTC/USDT"}


async def test_watch_ticker_streams_prices(client: Any, sim: SimProcess) -> None:
    first = await asyncio.wait_for(client.watch_ticker("BTC/USDT"), 10)
    assert first["last"] > 0
    sim.set_price("BTC/USDT", "31000.5")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ticker = await asyncio.wait_for(client.watch_ticker("BTC/USDT"), 5)
        if ticker["last"] == 31000.5:
            break
    else:
        pytest.fail("the moved price never arrived on the stream")
    sim.set_price("BTC/USDT", "30000")


async def test_place_fetch_cancel_by_client_order_id(client: Any, sim: SimProcess) -> None:
    await client.load_markets()
    order_id = cid()
    placed = await client.create_order(
        "ETH/USDT", "limit", "buy", "0.01", "1500", {"clientOrderId": order_id}
    )
    assert placed["clientOrderId"] == order_id and placed["status"] == "open"
    fetched = await client.fetch_order("", "ETH/USDT", {"clientOrderId": order_id})
    assert fetched["id"] == placed["id"]
    assert order_id in {o["clientOrderId"] for o in await client.fetch_open_orders("ETH/USDT")}
    cancelled = await client.cancel_order("", "ETH/USDT", {"clientOrderId": order_id})
    assert cancelled["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        await client.cancel_order("", "ETH/USDT", {"clientOrderId": order_id})
    with pytest.raises(ccxt.OrderNotFound):
        await client.fetch_order("", "ETH/USDT", {"clientOrderId": cid("never")})
    assert [o["status"] for o in sim.orders() if o["client_order_id"] == order_id] == ["canceled"]


async def test_duplicate_client_order_id_is_rejected(client: Any, sim: SimProcess) -> None:
    await client.load_markets()
    order_id = cid()
    params = {"clientOrderId": order_id}
    await client.create_order("ETH/USDT", "limit", "buy", "0.01", "1500", params)
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        await client.create_order("ETH/USDT", "limit", "buy", "0.01", "1500", params)
    assert len([o for o in sim.orders() if o["client_order_id"] == order_id]) == 1
    await client.cancel_order("", "ETH/USDT", params)


async def test_rejections_map_to_ccxt_exceptions(client: Any) -> None:
    await client.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        await client.create_order("ETH/USDT", "limit", "buy", "10000", "1500", {})
    with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
        await client.create_order("ETH/USDT", "limit", "buy", "0.001", "1500", {})


async def test_bad_credentials_raise_authentication_error(sim: SimProcess) -> None:
    for config in ({"secret": "wrong"}, {"apiKey": "unknown-key"}):
        c = binance_client(sim.port, **config)
        try:
            with pytest.raises(ccxt.AuthenticationError):
                await c.fetch_balance()
        finally:
            await c.close()


async def test_stale_timestamp_is_refused(client: Any) -> None:
    await client.load_markets()
    client.options["recvWindow"] = 1000
    client.nonce = lambda: int(time.time() * 1000) - 5000
    with pytest.raises(ccxt.InvalidNonce):
        await client.fetch_open_orders("ETH/USDT")


async def test_watch_orders_reports_a_fill(client: Any, sim: SimProcess) -> None:
    await client.load_markets()
    watcher = asyncio.ensure_future(client.watch_orders("ETH/USDT"))
    await asyncio.sleep(0.5)  # the user data subscription is in place
    order_id = cid()
    await client.create_order(
        "ETH/USDT", "limit", "buy", "0.01", "1990", {"clientOrderId": order_id}
    )
    sim.set_price("ETH/USDT", "1989")
    updates = await asyncio.wait_for(watcher, 10)
    sim.set_price("ETH/USDT", "2000")
    mine = [u for u in updates if u["clientOrderId"] == order_id]
    assert mine and mine[-1]["status"] == "closed" and mine[-1]["filled"] == 0.01
    trades = await client.fetch_order_trades(mine[-1]["id"], "ETH/USDT")
    assert [t["price"] for t in trades] == [1990]


async def test_rate_limit_answers_429_with_retry_after(sim: SimProcess, client: Any) -> None:
    await client.load_markets()
    sim.faults(rate_limit_rate=1, retry_after=3)
    with pytest.raises(ccxt.DDoSProtection):
        await client.fetch_open_orders("ETH/USDT")
    assert client.last_response_headers["Retry-After"] == "3"


async def test_server_errors_are_network_errors(sim: SimProcess, client: Any) -> None:
    await client.load_markets()
    sim.faults(error_rate=1)
    with pytest.raises(ccxt.NetworkError):
        await client.fetch_open_orders("ETH/USDT")


def test_order_log_lists_every_accepted_order(sim: SimProcess) -> None:
    orders = sim.orders()
    assert orders, "earlier tests placed orders"
    assert {"client_order_id", "exchange_order_id", "status", "side", "price"} <= set(orders[0])
    with urllib.request.urlopen(f"{sim.url}/_sim/faults", timeout=5) as response:
        assert response.status == 200
