"""Klines and public trades of ``quantmesh sim-exchange``: Binance's parameters and limits,
read raw and through ccxt's own ``binance`` class; the rate-limit burst switch."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from .support import BINANCE_OPTIONS, SimProcess, binance_client, binance_urls

pytestmark = pytest.mark.timeout(60)


def _get(sim: SimProcess, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"{sim.url}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _client(sim: SimProcess) -> Any:
    import ccxt

    return ccxt.binance(
        {"urls": binance_urls(sim.port), "options": dict(BINANCE_OPTIONS), "timeout": 5000}
    )


def test_klines_parameters_and_limits(sim: SimProcess) -> None:
    status, latest = _get(sim, "/api/v3/klines?symbol=ETHUSDT&interval=1m")
    assert status == 200 and len(latest) == 500  # the default limit
    row = latest[-1]
    assert len(row) == 12 and row[6] == row[0] + 59_999
    assert float(row[3]) <= float(row[1]) <= float(row[2])
    start = latest[0][0] - 5 * 60_000
    status, page = _get(sim, f"/api/v3/klines?symbol=ETHUSDT&interval=1m&startTime={start}&limit=3")
    assert [r[0] for r in page] == [start, start + 60_000, start + 120_000]
    status, hours = _get(sim, "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1000")
    assert status == 200 and len(hours) > 24 * 29
    assert all(b[0] - a[0] == 3_600_000 for a, b in itertools.pairwise(hours))
    assert _get(sim, "/api/v3/klines?symbol=ETHUSDT&interval=7m")[1]["code"] == -1120
    assert _get(sim, "/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=1001")[1]["code"] == -1130
    assert _get(sim, "/api/v3/klines?symbol=XXXUSDT&interval=1m")[1]["code"] == -1121
    assert _get(sim, "/api/v3/klines?symbol=ETHUSDT")[1]["code"] == -1102


def test_trades_and_agg_trades(sim: SimProcess) -> None:
    status, trades = _get(sim, "/api/v3/trades?symbol=ETHUSDT&limit=10")
    assert status == 200 and len(trades) == 10
    assert [t["id"] for t in trades] == sorted(t["id"] for t in trades)
    assert set(trades[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker",
                              "isBestMatch"}  # fmt: skip
    start = trades[0]["time"] - 600_000
    status, agg = _get(sim, f"/api/v3/aggTrades?symbol=ETHUSDT&startTime={start}&limit=8")
    assert status == 200 and len(agg) == 8 and all(a["T"] >= start for a in agg)
    code = _get(
        sim, f"/api/v3/aggTrades?symbol=ETHUSDT&startTime={start}&endTime={start + 3_600_001}"
    )
    assert code[1]["code"] == -1127


def test_ccxt_reads_candles_and_trades(sim: SimProcess) -> None:
    client = _client(sim)
    _status, raw = _get(sim, "/api/v3/klines?symbol=ETHUSDT&interval=5m&limit=20")
    since = raw[0][0]
    candles = client.fetch_ohlcv("ETH/USDT", "5m", since, 20)
    assert [c[0] for c in candles] == [r[0] for r in raw]
    assert [c[4] for c in candles] == [float(r[4]) for r in raw]
    trades = client.fetch_trades("ETH/USDT", limit=5)
    assert len(trades) == 5 and all(t["symbol"] == "ETH/USDT" for t in trades)


def test_rate_limit_burst_answers_429_at_the_chosen_call(sim: SimProcess) -> None:
    sim._call("POST", "/_sim/rate_limit", {"after": 1, "count": 2})
    path = "/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=1"
    codes = [_get(sim, path)[0] for _ in range(4)]
    assert codes == [200, 429, 429, 200]


async def test_published_prices_are_prints_on_rest_and_streams(sim: SimProcess) -> None:
    """Each published price is one print, the same on ``@trade``, ``@aggTrade`` and REST;
    ``@kline_1m`` carries the minute's candle."""
    client = binance_client(sim.port)
    try:
        await client.load_markets()
        streamed = asyncio.ensure_future(client.watch_trades("ETH/USDT"))
        aggregated = asyncio.ensure_future(
            client.watch_trades("ETH/USDT", params={"name": "aggTrade"})
        )
        candles = asyncio.ensure_future(client.watch_ohlcv("ETH/USDT", "1m"))
        await asyncio.sleep(0.5)  # subscribed
        sim.set_price("ETH/USDT", "2003.5")
        [trade] = [t for t in await asyncio.wait_for(streamed, 10) if t["price"] == 2003.5]
        [agg] = [t for t in await asyncio.wait_for(aggregated, 10) if t["price"] == 2003.5]
        rest = await client.fetch_trades("ETH/USDT", trade["timestamp"])
        assert [t["id"] for t in rest if t["price"] == 2003.5] == [trade["id"]] == [agg["id"]]
        candle = (await asyncio.wait_for(candles, 10))[-1]
        for _ in range(5):  # the first push may be the candle before the move
            if candle[2] >= 2003.5:
                break
            candle = (await asyncio.wait_for(client.watch_ohlcv("ETH/USDT", "1m"), 10))[-1]
        assert candle[2] >= 2003.5 and candle[3] <= candle[4] <= candle[2]
    finally:
        sim.set_price("ETH/USDT", "2000")
        await client.close()
