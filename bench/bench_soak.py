"""Soak: many order life cycles, and whether memory stays flat.

Two runs on a fake clock, each in its own event loop:

- adapter: ``CcxtExchange`` over a fake ccxt client (an in-memory exchange that keeps only
  a bounded history itself), with its order loop polling and a consumer draining the
  updates. Each cycle creates a buy with an expiry (signed through the adapter's request
  expiry, as a real client's would be), then either fills it (and the adapter looks the
  order and its fills up) or cancels it. Every 64th cycle another bot places an order on
  the same account, which the adapter must not remember.
- sender: ``OrderSender`` and ``OrderBook`` over the same adapter: buy placed, then either
  cancelled, or filled, sold and filled (a round trip); every answer committed to the
  book as the trader does.

Figures: cycles per second; RSS and the size of every map keyed by order or trade id,
half-way (the bounded memories are full by then) and at the end. Flat is the target: the
maps the same size, RSS within a few MB. No assertions here.

``python -m bench.bench_soak [--cycles N] [--sender-cycles N]`` runs it alone; the
defaults take about 30 s on a 2-core machine (about 20,000 adapter cycles and 5,000
sender cycles a second), ``--cycles 1000000`` a little under a minute more.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ccxt
import structlog
from prometheus_client import CollectorRegistry

from quantmesh.domain import MarketRules, OrderRequest, OrderUpdate
from quantmesh.exchange.ccxt.exchange import CcxtExchange, CcxtSettings
from quantmesh.exchange.ccxt.streams import StreamSettings
from quantmesh.grid.ids import client_order_id, grid_tag
from quantmesh.grid.planner import CancelOrder, PlaceOrder
from quantmesh.grid.state import GridSpec, GridState
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.trading.book import OrderBook
from quantmesh.trading.sender import OrderSender

__all__ = ["FakeCcxt", "measure_soak"]

SYMBOL = "ETH/USDT"
_MARKET = {
    "symbol": SYMBOL,
    "id": "ETHUSDT",
    "base": "ETH",
    "quote": "USDT",
    "spot": True,
    "precision": {"price": 0.01, "amount": 0.0001},
    "limits": {"amount": {"min": 0.0001}, "cost": {"min": 5}},
}
_HISTORY = 4096  # closed orders the fake exchange keeps answering lookups for
_STEP = 0.001  # fake seconds per exchange call


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1_000.0
        self.wall_minus_mono = 1_700_000_000.0

    def __call__(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.mono + self.wall_minus_mono

    async def sleep(self, seconds: float) -> None:
        self.mono += max(seconds, 0.0)
        await asyncio.sleep(0)


class FakeCcxt:
    """An in-memory exchange with ccxt's async client surface (the calls the adapter uses).

    Its id is ``binance``, so the adapter's request expiry wraps its ``sign``; creates and
    cancels call ``sign`` the way ccxt does, so each one carries the signed window. Closed
    orders beyond ``_HISTORY`` are forgotten: the fake itself stays flat.
    """

    id = "binance"
    apiKey = "key"
    secret = "secret"
    precisionMode = 4
    last_response_headers = None

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.has = {"fetchTime": True, "fetchOrderTrades": True, "fetchOrders": False}
        self.markets = {SYMBOL: _MARKET}
        self.options: dict[str, Any] = {"timeDifference": 0, "recvWindow": 10_000}
        self._open: dict[str, dict[str, Any]] = {}  # exchange id -> order
        self._closed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._by_cid: dict[str, str] = {}  # client id -> exchange id, of orders kept
        self._next = 0
        self.signed_windows = 0

    # what ccxt's sign() would do with the expiry (the adapter wraps this method)
    def sign(
        self, path: str, api: Any = "public", method: str = "GET", params: Any = None
    ) -> dict[str, Any]:
        if isinstance(params, dict) and "recvWindow" in params:
            self.signed_windows += 1
        return {"url": path, "method": method, "body": None, "headers": None}

    async def load_markets(self) -> Any:
        return self.markets

    async def fetch_time(self) -> int:
        return round(self.clock.wall() * 1000)

    async def close(self) -> None:
        return None

    def _tick(self) -> float:
        self.clock.mono += _STEP
        return self.clock.wall()

    def _close(self, order: dict[str, Any], status: str) -> None:
        self._open.pop(order["id"], None)
        order["status"] = status
        self._closed[order["id"]] = order
        while len(self._closed) > _HISTORY:
            _, old = self._closed.popitem(last=False)
            if self._by_cid.get(old["clientOrderId"]) == old["id"]:
                del self._by_cid[old["clientOrderId"]]

    def _find(self, id: str, params: dict[str, Any]) -> dict[str, Any] | None:
        xid = id or self._by_cid.get(str(params.get("clientOrderId")), "")
        return self._open.get(xid) or self._closed.get(xid)

    async def create_order(
        self, symbol: str, type: str, side: str, amount: Any, price: Any, params: Any
    ) -> dict[str, Any]:
        self.sign("order", ["private"], "POST", dict(params))
        self._next += 1
        xid = str(self._next)
        order: dict[str, Any] = {
            "id": xid,
            "clientOrderId": params.get("clientOrderId") or f"x-{xid}",
            "symbol": symbol,
            "side": side,
            "price": float(price),
            "amount": float(amount),
            "filled": 0.0,
            "status": "open",
            "timestamp": int(self._tick() * 1000),
        }
        self._open[xid] = order
        self._by_cid[order["clientOrderId"]] = xid
        return dict(order)

    def fill(self, xid: str) -> None:
        order = self._open[xid]
        order["filled"] = order["amount"]
        self._close(order, "closed")

    def close_foreign(self) -> None:
        for order in list(self._open.values()):
            if not str(order["clientOrderId"]).startswith("qm."):
                self._close(order, "canceled")

    async def cancel_order(self, id: str, symbol: str, params: Any) -> dict[str, Any]:
        self.sign("order", ["private"], "DELETE", dict(params))
        self._tick()
        order = self._find(id, params)
        if order is None or order["status"] != "open":
            raise ccxt.OrderNotFound("binance Unknown order sent.")
        self._close(order, "canceled")
        return dict(order)

    async def fetch_order(self, id: str, symbol: str, params: Any) -> dict[str, Any]:
        self._tick()
        order = self._find(id, params)
        if order is None:
            raise ccxt.OrderNotFound("binance Order does not exist.")
        return dict(order)

    async def fetch_open_orders(self, symbol: str) -> list[dict[str, Any]]:
        self._tick()
        return [dict(o) for o in self._open.values()]

    async def fetch_order_trades(self, id: str, symbol: str) -> list[dict[str, Any]]:
        order = self._open.get(id) or self._closed.get(id)
        if order is None or not order["filled"]:
            return []
        return [
            {
                "id": f"t{id}",
                "order": id,
                "side": order["side"],
                "price": order["price"],
                "amount": order["filled"],
                "timestamp": order["timestamp"],
                "fee": {"cost": 0.0, "currency": "USDT"},
            }
        ]


def _rss_mb() -> float:
    """Resident set size of this process now, in MB (after a garbage collection)."""
    gc.collect()
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return float("nan")


def _adapter(clock: FakeClock) -> tuple[FakeCcxt, CcxtExchange]:
    client = FakeCcxt(clock)
    stream = StreamSettings(streams=False, order_poll_interval=0.5)
    exchange = CcxtExchange(
        client,
        CcxtSettings(stream=stream, verify_credentials=False),
        clock=clock,
        sleep=clock.sleep,
        wall=clock.wall,
    )
    return client, exchange


async def _drain(updates: Any, sink: Callable[[OrderUpdate], None] | None = None) -> None:
    async for update in updates:
        if sink is not None:
            sink(update)


async def _run_adapter(cycles: int, checkpoints: list[int]) -> dict[str, float]:
    clock = FakeClock()
    client, exchange = _adapter(clock)
    await exchange.start()
    consumer = asyncio.create_task(_drain(exchange.watch_orders(SYMBOL)))
    figures: dict[str, float] = {}
    tag = "50a4c0"
    price, amount = Decimal("1500.00"), Decimal("0.0100")
    started = time.perf_counter()
    try:
        for i in range(1, cycles + 1):
            cid = client_order_id(tag, -(i % 40) - 1, "buy", i)
            request = OrderRequest(SYMBOL, "buy", price, amount, cid, expires_at=clock() + 5.0)
            order = await exchange.create_order(request)
            if i % 2:
                client.fill(order.exchange_order_id)
                await exchange.fetch_order_fills(SYMBOL, cid)  # the order, then its trades
            else:
                await exchange.cancel_order(SYMBOL, cid, expires_at=clock() + 5.0)
            if i % 64 == 0:  # another bot's order on the account
                await client.create_order(SYMBOL, "limit", "buy", 0.01, 1400, {})
                await exchange.fetch_open_orders(SYMBOL)
                client.close_foreign()
            if i % 16 == 0:
                await asyncio.sleep(0)  # the order loop polls, the consumer drains
            if i in checkpoints:
                _checkpoint(figures, f"adapter@{i}", exchange.memory_sizes())
        figures["adapter_seconds"] = time.perf_counter() - started
    finally:
        consumer.cancel()
        await exchange.close()
    figures["adapter_cycles"] = float(cycles)
    figures["adapter_signed_windows"] = float(client.signed_windows)
    return figures


def _checkpoint(figures: dict[str, float], at: str, sizes: dict[str, int]) -> None:
    figures[f"{at} rss_mb"] = _rss_mb()
    for name, size in sizes.items():
        figures[f"{at} {name}"] = float(size)


def _sender_sizes(sender: OrderSender, book: OrderBook, exchange: CcxtExchange) -> dict[str, int]:
    sizes = dict(exchange.memory_sizes())
    sizes.update(
        {
            "sender unknown_since": len(sender._unknown_since),
            "sender cooldown": len(sender._cooldown),
            "sender verified": len(sender._verified),
            "book open": len(book._open),
            "book open_xid": len(book._open_xid),
            "book unknown": len(book._unknown),
            "book progress": len(book._progress),
            "book closed": len(book._closed),
            "book seen_fills": len(book._seen),
            "grid levels": len(book.state.levels),
        }
    )
    return sizes


async def _run_sender(cycles: int, checkpoints: list[int]) -> dict[str, float]:
    clock = FakeClock()
    client, exchange = _adapter(clock)
    await exchange.start()
    rules = MarketRules(
        symbol=SYMBOL,
        base="ETH",
        quote="USDT",
        tick_size=Decimal("0.01"),
        lot_size=Decimal("0.0001"),
        min_amount=Decimal("0.0001"),
        min_notional=Decimal(5),
    )
    spec = GridSpec(SYMBOL, Decimal(10), Decimal(20), 10, 10, anchor=Decimal(2000))
    book = OrderBook(spec, rules, GridState(SYMBOL, spec.anchor), grid_tag(SYMBOL, spec.anchor,
                     spec.interval, spec.spacing))  # fmt: skip
    sender = OrderSender(
        SYMBOL,
        exchange=exchange,
        locker=NopLock(),
        lock_keys=LockKeys("binance"),
        metrics=Metrics(CollectorRegistry()),
        place_ttl=5.0,
        cancel_ttl=5.0,
        reject_cooldown=1.0,
        owner_deadline=lambda: clock() + 5.0,  # every request expires with its lease
        clock=clock,
    )

    async def settle(answers: list[Any]) -> Any:
        """Commit each answer to the book (with its fills), as the trader does."""
        last = None
        for order in answers:
            fills = await exchange.fetch_order_fills(SYMBOL, order.client_order_id)
            effect = book.effect(OrderUpdate(order, tuple(fills)), clock.wall())
            if effect is not None:
                book.commit(effect)
            last = order
        return last

    figures: dict[str, float] = {}
    amount = Decimal("0.0100")
    started = time.perf_counter()
    try:
        for i in range(1, cycles + 1):
            level = -(i % 40) - 1
            price = spec.anchor + level * spec.interval
            buy = await settle(await sender.place(book, PlaceOrder(level, "buy", price, amount)))
            if buy is None:
                raise RuntimeError(f"cycle {i}: the buy was not placed")
            if i % 2 == 0:
                cancel = CancelOrder(buy.client_order_id, level, "buy", "soak")
                await settle(await sender.cancel(book, cancel))
            else:
                client.fill(buy.exchange_order_id)
                await settle([await exchange.fetch_order(SYMBOL, buy.client_order_id)])
                holding = book.state.level(level).holding
                sell_price = price + spec.interval
                sell = await settle(
                    await sender.place(book, PlaceOrder(level, "sell", sell_price, holding))
                )
                if sell is None:
                    raise RuntimeError(f"cycle {i}: the sell was not placed")
                client.fill(sell.exchange_order_id)
                await settle([await exchange.fetch_order(SYMBOL, sell.client_order_id)])
            if i in checkpoints:
                _checkpoint(figures, f"sender@{i}", _sender_sizes(sender, book, exchange))
        figures["sender_seconds"] = time.perf_counter() - started
    finally:
        await exchange.close()
    figures["sender_cycles"] = float(cycles)
    figures["sender_round_trips_pnl"] = float(book.realized_pnl)
    return figures


ADAPTER_CYCLES = 400_000
SENDER_CYCLES = 50_000


def measure_soak(
    cycles: int = ADAPTER_CYCLES, sender_cycles: int = SENDER_CYCLES
) -> dict[str, float]:
    """Run both soaks; figures keyed ``adapter@<cycle> <map>`` / ``sender@<cycle> <map>``
    half-way and at the end (``half`` / ``end`` entries name those cycles), plus cycles
    per second."""
    if cycles < 10 or sender_cycles < 10:
        raise ValueError("at least 10 cycles each")
    previous = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        cache_logger_on_first_use=False,
    )
    try:
        figures = {"rss_mb_start": _rss_mb()}
        figures.update(asyncio.run(_run_adapter(cycles, [cycles // 2, cycles])))
        figures.update(asyncio.run(_run_sender(sender_cycles, [sender_cycles // 2, sender_cycles])))
    finally:
        structlog.configure(**previous)
    figures["adapter_cycles_per_s"] = figures["adapter_cycles"] / figures["adapter_seconds"]
    figures["sender_cycles_per_s"] = figures["sender_cycles"] / figures["sender_seconds"]
    return figures


def maps_at(figures: dict[str, float], run: str, cycle: int) -> dict[str, float]:
    """The map sizes of ``run`` (``adapter`` / ``sender``) at a checkpoint, by name."""
    prefix = f"{run}@{cycle} "
    return {
        k.removeprefix(prefix): v
        for k, v in figures.items()
        if k.startswith(prefix) and not k.endswith("rss_mb")
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.bench_soak", description=__doc__)
    parser.add_argument("--cycles", type=int, default=ADAPTER_CYCLES)
    parser.add_argument("--sender-cycles", type=int, default=SENDER_CYCLES)
    args = parser.parse_args(argv)
    for key, value in measure_soak(args.cycles, args.sender_cycles).items():
        print(f"{key:50s} {value:,.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
