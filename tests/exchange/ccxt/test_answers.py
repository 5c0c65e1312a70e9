"""Exchange answers that ccxt parses only in part: the adapter looks the order up instead
of failing. A scripted ccxt client stands in for the exchange (pure edge: the parsing is
ccxt's own, called for real)."""

from __future__ import annotations

from typing import Any, ClassVar

import ccxt.async_support as ccxt_async

from quantmesh.exchange.ccxt.exchange import CcxtExchange, CcxtSettings
from quantmesh.exchange.ccxt.streams import OrderLoop, StreamSettings

CID = "qm.0c04fe.B0.0"
MARKET = {
    "symbol": "ETH/USDT",
    "id": "ETH-USDT",
    "base": "ETH",
    "quote": "USDT",
    "spot": True,
    "precision": {"price": 0.01, "amount": 0.0001},
    "limits": {},
}


class OkxLike:
    """Answers a cancel as OKX does (ids only); answers a lookup in full."""

    id = "okx"
    apiKey = secret = "x"
    precisionMode = 4
    last_response_headers = None

    def __init__(self) -> None:
        self.has = {"watchOrders": False, "watchTicker": False, "fetchOrders": False}
        self.markets = {"ETH/USDT": MARKET}
        self.real = ccxt_async.okx()
        self.lookups = 0

    async def load_markets(self) -> Any:
        return self.markets

    async def cancel_order(self, id: str, symbol: str, params: dict[str, Any]) -> Any:
        answer = {"clOrdId": params["clientOrderId"], "ordId": "1", "sCode": "0", "sMsg": ""}
        return self.real.parse_order(answer, MARKET)

    async def fetch_order(self, id: str, symbol: str, params: dict[str, Any]) -> Any:
        self.lookups += 1
        answer = {
            "clOrdId": params["clientOrderId"],
            "ordId": "1",
            "instId": "ETH-USDT",
            "side": "buy",
            "ordType": "limit",
            "px": "2000",
            "sz": "0.015",
            "accFillSz": "0",
            "state": "canceled",
            "cTime": "1700000000000",
            "uTime": "1700000001000",
        }
        return self.real.parse_order(answer, MARKET)

    async def close(self) -> None:
        await self.real.close()


async def test_a_cancel_answered_with_ids_only_is_settled_by_a_lookup() -> None:
    client = OkxLike()
    exchange = CcxtExchange(
        client, CcxtSettings(verify_credentials=False, stream=StreamSettings(streams=False))
    )
    await exchange.start()
    try:
        order = await exchange.cancel_order("ETH/USDT", CID)
    finally:
        await exchange.close()
    assert client.lookups == 1
    assert (order.client_order_id, order.status, order.side) == (CID, "canceled", "buy")


async def test_an_unreadable_streamed_order_is_settled_by_a_resync_not_the_end_of_the_stream() -> (
    None
):
    resyncs: list[str] = []
    published: list[object] = []

    async def fetch_open(symbol: str) -> list[Any]:
        resyncs.append(symbol)
        return []

    async def unused(*args: Any) -> Any:
        raise AssertionError("not called")

    def convert(raw: dict[str, Any], symbol: str) -> Any:
        raise ValueError("order has no side")

    class Client:
        has: ClassVar[dict[str, bool]] = {"watchOrders": True}

    loop = OrderLoop(
        "ETH/USDT",
        Client(),
        StreamSettings(),
        fetch_open=fetch_open,
        fetch_order=unused,
        fetch_fills=unused,
        convert=convert,
        publish=published.append,
        clock=lambda: 0.0,
        sleep=unused,
        rng=lambda: 0.5,
    )
    await loop._emit_raw({"symbol": "ETH/USDT", "id": "1"})
    assert resyncs == ["ETH/USDT"]
    assert published == []
