"""Several API keys on one simulator, and its records of who did what: ``/_sim/actions``,
the key and close time of every order in ``/_sim/orders``, and ``/_sim/trades``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt
import pytest

from quantmesh.exchange.sim.server import binance as wire
from tests.cli.support import plain_lines, run_cli

from .support import API_KEY, API_SECRET, EXTRA_KEYS, SimProcess, binance_client, running_sim

KEY_B, SECRET_B = EXTRA_KEYS[0]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """A simulator of its own: this module reads the whole action log."""
    with running_sim(
        tmp_path_factory.mktemp("sim-keys"), "--seed", "5", extra_keys=EXTRA_KEYS
    ) as process:
        yield process


@pytest.fixture
async def clients(sim: SimProcess) -> AsyncIterator[tuple[Any, Any]]:
    a = binance_client(sim.port)
    b = binance_client(sim.port, apiKey=KEY_B, secret=SECRET_B)
    try:
        await asyncio.gather(a.load_markets(), b.load_markets())
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


def cid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def actions_of(sim: SimProcess, client_order_id: str) -> list[dict[str, Any]]:
    return [a for a in sim.actions() if a["client_order_id"] == client_order_id]


async def test_each_key_is_attributed_its_creates_and_cancels(
    sim: SimProcess, clients: tuple[Any, Any]
) -> None:
    a, b = clients
    id_a, id_b = cid("a"), cid("b")
    started = time.time()
    placed_a = await a.create_order(
        "ETH/USDT", "limit", "buy", "0.01", "1500", {"clientOrderId": id_a}
    )
    await b.create_order("ETH/USDT", "limit", "sell", "0.01", "2500.5", {"clientOrderId": id_b})
    await a.cancel_order(placed_a["id"], "ETH/USDT")  # by exchange order id
    await b.cancel_order("", "ETH/USDT", {"clientOrderId": id_b})

    create_a, cancel_a = actions_of(sim, id_a)
    assert create_a == {
        "t": create_a["t"],
        "api_key": API_KEY,
        "action": "create",
        "symbol": "ETH/USDT",
        "client_order_id": id_a,
        "exchange_order_id": placed_a["id"],
        "side": "buy",
        "price": "1500",
        "result": "accepted",
        "code": None,
    }
    assert started <= create_a["t"] <= cancel_a["t"] <= time.time()
    assert cancel_a["action"] == "cancel" and cancel_a["api_key"] == API_KEY
    assert cancel_a["result"] == "accepted" and cancel_a["exchange_order_id"] == placed_a["id"]
    assert cancel_a["side"] == "buy" and cancel_a["price"] == "1500"
    logged_b = actions_of(sim, id_b)
    assert [(x["action"], x["api_key"], x["result"]) for x in logged_b] == [
        ("create", KEY_B, "accepted"),
        ("cancel", KEY_B, "accepted"),
    ]
    assert logged_b[0]["side"] == "sell" and logged_b[0]["price"] == "2500.5"

    orders = {o["client_order_id"]: o for o in sim.orders()}
    assert orders[id_a]["api_key"] == API_KEY and orders[id_b]["api_key"] == KEY_B
    for order in (orders[id_a], orders[id_b]):
        assert order["status"] == "canceled"
        assert order["created_at"] < order["closed_at"] == order["updated_at"]


async def test_open_order_has_no_close_time(sim: SimProcess, clients: tuple[Any, Any]) -> None:
    _, b = clients
    order_id = cid("open")
    await b.create_order("ETH/USDT", "limit", "buy", "0.01", "1400", {"clientOrderId": order_id})
    try:
        (order,) = [o for o in sim.orders() if o["client_order_id"] == order_id]
        assert order["status"] == "open" and order["closed_at"] is None
        assert order["api_key"] == KEY_B
    finally:
        await b.cancel_order("", "ETH/USDT", {"clientOrderId": order_id})


async def test_rejections_are_logged_with_their_code(
    sim: SimProcess, clients: tuple[Any, Any]
) -> None:
    a, b = clients
    order_id = cid("dup")
    params = {"clientOrderId": order_id}
    await a.create_order("BTC/USDT", "limit", "buy", "0.001", "20000", params)
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        await b.create_order("BTC/USDT", "limit", "buy", "0.001", "20000", params)
    await a.cancel_order("", "BTC/USDT", params)
    with pytest.raises(ccxt.OrderNotFound):
        await b.cancel_order("", "BTC/USDT", params)  # already cancelled

    logged = actions_of(sim, order_id)
    assert [(x["action"], x["api_key"], x["result"], x["code"]) for x in logged] == [
        ("create", API_KEY, "accepted", None),
        ("create", KEY_B, "rejected", -2010),
        ("cancel", API_KEY, "accepted", None),
        ("cancel", KEY_B, "rejected", -2011),
    ]
    duplicate = logged[1]
    assert duplicate["exchange_order_id"] is None
    assert (duplicate["symbol"], duplicate["side"], duplicate["price"]) == (
        "BTC/USDT",
        "buy",
        "20000",
    )
    # The refused cancel names the order it found (closed already).
    assert logged[3]["exchange_order_id"] == logged[0]["exchange_order_id"]
    assert len([o for o in sim.orders() if o["client_order_id"] == order_id]) == 1


async def test_an_unknown_key_is_refused_and_logged(sim: SimProcess) -> None:
    stranger = binance_client(sim.port, apiKey="unknown-key", secret="whatever")
    wrong_secret = binance_client(sim.port, apiKey=KEY_B, secret=API_SECRET)
    ids = cid("who"), cid("who")
    try:
        await stranger.load_markets()
        await wrong_secret.load_markets()
        for client, order_id in zip((stranger, wrong_secret), ids, strict=True):
            with pytest.raises(ccxt.AuthenticationError):
                await client.create_order(
                    "ETH/USDT", "limit", "buy", "0.01", "1500", {"clientOrderId": order_id}
                )
    finally:
        await asyncio.gather(stranger.close(), wrong_secret.close())
    (refused,) = actions_of(sim, ids[0])
    assert (refused["api_key"], refused["result"], refused["code"]) == (
        "unknown-key",
        "rejected",
        -2015,
    )
    (bad_signature,) = actions_of(sim, ids[1])
    assert (bad_signature["result"], bad_signature["code"]) == ("rejected", -1022)
    placed = {o["client_order_id"] for o in sim.orders()}
    assert not placed & set(ids)


async def test_trades_list_every_fill_with_its_key(
    sim: SimProcess, clients: tuple[Any, Any]
) -> None:
    _, b = clients
    order_id = cid("fill")
    # Marketable: fills at once at the last price (2000).
    placed = await b.create_order(
        "ETH/USDT", "limit", "buy", "0.01", "2010", {"clientOrderId": order_id}
    )
    trades = sim.trades()
    (trade,) = [t for t in trades if t["client_order_id"] == order_id]
    assert trade == {
        "trade_id": trade["trade_id"],
        "client_order_id": order_id,
        "exchange_order_id": placed["id"],
        "symbol": "ETH/USDT",
        "side": "buy",
        "price": "2000",
        "amount": "0.01",
        "fee": trade["fee"],
        "fee_currency": "USDT",
        "ts": trade["ts"],
        "api_key": KEY_B,
    }
    assert float(trade["fee"]) == pytest.approx(0.02)
    assert [int(t["trade_id"]) for t in trades] == sorted(int(t["trade_id"]) for t in trades)
    (order,) = [o for o in sim.orders() if o["client_order_id"] == order_id]
    assert order["status"] == "filled" and order["closed_at"] == trade["ts"]


async def _subscribe(port: int, key: str, secret: str) -> dict[str, Any]:
    params: dict[str, Any] = {"apiKey": key, "timestamp": int(time.time() * 1000)}
    params["signature"] = wire.sign(secret, urlencode(sorted(params.items())))
    message = {"id": "1", "method": "userDataStream.subscribe.signature", "params": params}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/ws-api/v3") as ws,
    ):
        await ws.send_json(message)
        answer: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), 5)
        return answer


async def test_user_data_stream_accepts_each_key_with_its_own_secret(sim: SimProcess) -> None:
    for key, secret in ((API_KEY, API_SECRET), *EXTRA_KEYS):
        answer = await _subscribe(sim.port, key, secret)
        assert answer["status"] == 200 and "subscriptionId" in answer["result"], answer
    refused = await _subscribe(sim.port, KEY_B, API_SECRET)
    assert refused["error"]["code"] == -1022
    unknown = await _subscribe(sim.port, "unknown-key", API_SECRET)
    assert unknown["error"]["code"] == -2015


def test_keys_from_the_environment_are_accepted(tmp_path: Path) -> None:
    env = {"QM_SIM_EXTRA_KEYS": "env-key-1:env-secret-1, env-key-2:se:cret"}
    with running_sim(tmp_path, env=env) as process:

        async def place(key: str, secret: str) -> None:
            client = binance_client(process.port, apiKey=key, secret=secret)
            try:
                await client.load_markets()
                await client.create_order("ETH/USDT", "limit", "buy", "0.01", "1500")
            finally:
                await client.close()

        async def both() -> None:
            await place("env-key-1", "env-secret-1")
            await place("env-key-2", "se:cret")

        asyncio.run(asyncio.wait_for(both(), 20))
        keys = [a["api_key"] for a in process.actions() if a["result"] == "accepted"]
        assert keys == ["env-key-1", "env-key-2"]


@pytest.mark.parametrize("value", ["no-colon", ":secret", "key:", "a,b:c"])
def test_a_malformed_extra_key_is_a_usage_error(tmp_path: Path, value: str) -> None:
    result = run_cli(["sim-exchange", "--port", "0", "--extra-key", value], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in plain_lines(result.stderr) if "error:" in line]
    assert len(errors) == 1 and "argument --extra-key:" in errors[0], result.stderr
    assert "is not KEY:SECRET" in errors[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"QM_SIM_EXTRA_KEYS": "k1:s1,broken"}, "QM_SIM_EXTRA_KEYS: 'broken' is not KEY:SECRET"),
        ({"QM_SIM_EXTRA_KEYS": "k1:s1", "QM_SIM_API_KEY": "k1"}, "'k1' is given twice"),
    ],
)
def test_a_bad_key_environment_exits_2_with_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = run_cli(["sim-exchange", "--port", "0"], tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    lines = plain_lines(result.stderr)
    assert len(lines) == 1 and expected in lines[0], result.stderr
