"""``PaperExchange`` on the simulator's public data through ccxt's real ``binance`` class:
fills by the trade prints (``through`` and ``touch``), the venue's rules and fees, state
kept across a restart, REST when the streams are lost. The simulator's own account is
never used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.domain import OrderUpdate
from quantmesh.errors import DuplicateOrder, InsufficientFunds, InvalidOrder
from quantmesh.exchange.paper.exchange import PaperExchange
from tests.exchange.sim.server.support import SimProcess, binance_urls
from tests.support import free_port

from .support import buy, eventually, paper_exchange, sell

pytestmark = pytest.mark.timeout(30)
ETH = "ETH/USDT"


async def _next(updates: AsyncIterator[OrderUpdate]) -> OrderUpdate:
    return await asyncio.wait_for(anext(updates), 10)


async def _trading(exchange: PaperExchange) -> None:
    """Started, with the trade stream of ETH/USDT followed (prints from now on count)."""
    await exchange.start()
    await exchange.market(ETH)
    await asyncio.sleep(0.5)  # the trade stream subscribed


async def test_through_fills_beyond_the_price_touch_at_it(sim: SimProcess, tmp_path: Path) -> None:
    sim.set_price(ETH, "2000")
    through = paper_exchange(sim.port, tmp_path / "through.db")
    touch = paper_exchange(sim.port, tmp_path / "touch.db", paper={"fill": "touch"})
    await _trading(through)
    await _trading(touch)
    try:
        rules = await through.market(ETH)
        assert (rules.tick_size, rules.lot_size) == (Decimal("0.01"), Decimal("0.0001"))
        with pytest.raises(InvalidOrder):  # the venue's tick, from load_markets
            await through.create_order(buy("1990.001", "qm.000001.B-2.0"))
        through_updates, touch_updates = through.watch_orders(ETH), touch.watch_orders(ETH)
        for exchange in (through, touch):
            await exchange.create_order(buy("1990", "qm.000001.B-2.0"))
        sim.set_price(ETH, "1990")  # prints at the price: touch fills, through does not
        touched = await _next(touch_updates)
        assert touched.order.status == "filled" and touched.fills[0].price == Decimal(1990)
        assert (await through.fetch_order(ETH, "qm.000001.B-2.0")).status == "open"
        sim.set_price(ETH, "1989.99")  # strictly through: filled at its own price
        update = await _next(through_updates)
        [fill] = update.fills
        assert update.order.status == "filled" and fill.price == Decimal(1990)
        maker = Decimal(str(through.account.engine.fees(ETH).maker))
        assert maker > 0 and fill.fee == Decimal("19.90") * maker
        assert await through.fetch_order_fills(ETH, "qm.000001.B-2.0") == [fill]
        balances = through.account.balances()
        assert balances["ETH"].free == Decimal("10.01")
        assert balances["USDT"].free == Decimal(100_000) - Decimal("19.90") - fill.fee
    finally:
        await through.close()
        await touch.close()
        sim.set_price(ETH, "2000")
    assert not [o for o in sim.orders() if o["client_order_id"].startswith("qm.")]


async def test_restart_keeps_balances_orders_and_fills(sim: SimProcess, tmp_path: Path) -> None:
    sim.set_price(ETH, "2000")
    state = tmp_path / "paper.db"
    first = paper_exchange(sim.port, state)
    await _trading(first)
    try:
        updates = first.watch_orders(ETH)
        await first.create_order(sell("2010", "qm.000002.S1.0"))
        await first.create_order(buy("1980", "qm.000002.B-4.0"))
        await first.create_order(buy("1970", "qm.000002.B-6.0"))
        await first.cancel_order(ETH, "qm.000002.B-6.0")
        assert (await _next(updates)).order.status == "canceled"
        sim.set_price(ETH, "2010.01")
        assert (await _next(updates)).order.client_order_id == "qm.000002.S1.0"
        balances = first.account.balances()
        fills = await first.fetch_order_fills(ETH, "qm.000002.S1.0")
    finally:
        await first.close()
    second = paper_exchange(sim.port, state)
    await _trading(second)
    try:
        assert second.account.balances() == balances
        assert await second.fetch_order_fills(ETH, "qm.000002.S1.0") == fills
        [open_buy] = await second.fetch_open_orders(ETH)
        assert open_buy.client_order_id == "qm.000002.B-4.0"
        since = await second.fetch_orders_since(ETH, 0)
        assert [o.status for o in since] == ["filled", "open", "canceled"]
        with pytest.raises(DuplicateOrder):
            await second.create_order(buy("1980", "qm.000002.B-4.0"))
        with pytest.raises(InsufficientFunds):
            await second.create_order(sell("2100", "qm.000002.S5.0", amount="100"))
        updates = second.watch_orders(ETH)
        sim.set_price(ETH, "1979.99")  # the restored buy still fills
        update = await _next(updates)
        assert update.order.client_order_id == "qm.000002.B-4.0" and update.fills
    finally:
        await second.close()
        sim.set_price(ETH, "2000")


async def test_lost_streams_fall_back_to_rest(sim: SimProcess, tmp_path: Path) -> None:
    """WebSockets that never connect: prices and trades come by REST polling."""
    sim.set_price(ETH, "2000")
    urls = binance_urls(sim.port)
    dead = f"ws://127.0.0.1:{free_port()}"
    urls["api"]["ws"] = {"spot": f"{dead}/ws", "ws-api": {"spot": f"{dead}/ws-api/v3"}}
    exchange = paper_exchange(
        sim.port,
        tmp_path / "paper.db",
        urls=urls,
        stream_failures_before_polling=1,
        stream_retry_after=60,
    )
    await exchange.start()
    try:
        ticks = exchange.watch_ticks(ETH)
        await exchange.market(ETH)
        updates = exchange.watch_orders(ETH)
        await eventually(
            lambda: exchange.stream_reconnects().get((ETH, "trades"), 0) >= 1,
            10,
            "the trade stream to fail",
        )
        await exchange.create_order(buy("1990", "qm.000003.B-2.0"))
        sim.set_price(ETH, "1985")
        update = await _next(updates)
        assert update.order.status == "filled" and update.fills[0].price == Decimal(1990)
        tick = await asyncio.wait_for(anext(ticks), 10)
        assert tick.price > 0
        health = exchange.price_health()
        assert health is not None
        await eventually(lambda: health.price_fresh(ETH), 10, "a polled price")
        assert exchange.stream_reconnects()[(ETH, "prices")] >= 1
    finally:
        await exchange.close()
        sim.set_price(ETH, "2000")
