"""The simulated exchange: feeds, subscriptions, persistence and restarts."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from quantmesh.domain import MarketRules, OrderRequest, Tick
from quantmesh.errors import (
    Disconnected,
    DuplicateOrder,
    InsufficientFunds,
    MarketNotFound,
    OrderNotFound,
    StartupError,
)
from quantmesh.exchange.base import Exchange
from quantmesh.exchange.sim.feeds import FeedStep, PriceFeed, random_walk
from quantmesh.exchange.sim.matching import Balance
from quantmesh.exchange.sim.simulated import SimMarket, SimulatedExchange
from quantmesh.exchange.sim.store import SimStore
from tests.exchange.support import BTC, ETH

D = Decimal
TIMEOUT = 5.0

Factory = Callable[..., SimulatedExchange]


@pytest.fixture
async def make_exchange(tmp_path: Path) -> AsyncIterator[Factory]:
    """Builds exchanges (state in tmp_path by default) and closes them all afterwards."""
    made: list[SimulatedExchange] = []

    def make(**kwargs: Any) -> SimulatedExchange:
        kwargs.setdefault("markets", {ETH.symbol: SimMarket(ETH, D("2000"))})
        kwargs.setdefault("balances", {"USDT": D("1000"), "ETH": D("1")})
        kwargs.setdefault("fee_rate", D("0.001"))
        kwargs.setdefault("state_path", tmp_path / "state" / "sim.db")
        exchange = SimulatedExchange(**kwargs)
        made.append(exchange)
        return exchange

    yield make
    for exchange in made:
        await exchange.close()


async def next_of(iterator: AsyncIterator[Any]) -> Any:
    async with asyncio.timeout(TIMEOUT):
        return await anext(iterator)


def buy(price: str, amount: str = "0.01", cid: str = "b1") -> OrderRequest:
    return OrderRequest("ETH/USDT", "buy", D(price), D(amount), cid)


class ScriptedFeed:
    """A feed that plays a fixed list of prices: the first at once, then one per ``delay``."""

    def __init__(self, symbol: str, prices: list[str], delay: float = 0.0) -> None:
        self._symbol = symbol
        self._steps = [FeedStep(delay if n else 0.0, D(p)) for n, p in enumerate(prices)]

    @property
    def symbol(self) -> str:
        return self._symbol

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._steps)


async def test_ticks_flow_from_a_random_walk_feed(make_exchange: Factory) -> None:
    feed = random_walk(volatility=0.01, interval=0.001, seed=1)
    exchange = make_exchange(markets={ETH.symbol: SimMarket(ETH, D("2000"), feed)})
    ticks = exchange.watch_ticks("ETH/USDT")  # subscribed before start: sees the first tick
    await exchange.start()
    assert exchange.name == "simulated"
    assert await exchange.market("ETH/USDT") == ETH
    first = await next_of(ticks)
    assert first == Tick("ETH/USDT", D("2000"), first.ts)
    later = [await next_of(ticks) for _ in range(5)]
    assert all(t.price % ETH.tick_size == 0 and t.price > 0 for t in later)
    assert len({t.price for t in later}) > 1


async def test_a_buy_below_fills_when_the_feed_walks_down(
    make_exchange: Factory, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def sleep(delay: float) -> None:
        if delay > 0:
            await release.wait()

    def factory(rules: MarketRules, start: Decimal) -> PriceFeed:
        return ScriptedFeed(rules.symbol, ["1995", "1990", "1980.5"], delay=1.0)

    exchange = make_exchange(markets={ETH.symbol: SimMarket(ETH, D("2000"), factory)}, sleep=sleep)
    orders = exchange.watch_orders("ETH/USDT")
    ticks = exchange.watch_ticks("ETH/USDT")
    await exchange.start()
    assert (await next_of(ticks)).price == D("1995")
    placed = await exchange.create_order(buy("1990"))
    assert placed.is_open
    release.set()
    update = await next_of(orders)
    assert update.order.client_order_id == "b1"
    assert update.order.status == "filled"
    assert update.fills[0].price == D("1990")
    assert update.fills[0].fee == D("0.0199")
    # The fill was persisted before it was published.
    store = SimStore(tmp_path / "state" / "sim.db")
    try:
        snapshot = store.load()
    finally:
        store.close()
    assert snapshot is not None
    assert [o["status"] for o in snapshot["orders"]] == ["filled"]
    assert [(await next_of(ticks)).price for _ in range(2)] == [D("1990"), D("1980.5")]
    assert (await exchange.fetch_order("ETH/USDT", "b1")).status == "filled"
    assert exchange.engine.balances()["USDT"] == Balance(D("980.0801"), D(0))


async def test_fills_are_published_before_their_tick(make_exchange: Factory) -> None:
    exchange = make_exchange()
    await exchange.start()
    seen: list[str] = []
    orders = exchange.watch_orders("ETH/USDT")
    ticks = exchange.watch_ticks("ETH/USDT")

    async def consume(iterator: AsyncIterator[Any], label: str) -> None:
        async for _ in iterator:
            seen.append(label)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(consume(orders, "order"))
        tg.create_task(consume(ticks, "tick"))
        await exchange.create_order(buy("1990"))
        await asyncio.sleep(0)
        exchange.set_price("ETH/USDT", D("1985"))
        await asyncio.sleep(0.01)
        await exchange.close()
    assert seen == ["order", "tick"]


async def test_restart_resumes_orders_balances_and_last_price(make_exchange: Factory) -> None:
    starts: list[Decimal] = []

    def factory(rules: MarketRules, start: Decimal) -> PriceFeed:
        starts.append(start)
        return ScriptedFeed(rules.symbol, [])

    markets = {
        ETH.symbol: SimMarket(ETH, D("2000"), factory),
        BTC.symbol: SimMarket(BTC, D("30000")),
    }
    first = make_exchange(markets=markets)
    await first.start()
    await first.create_order(buy("1990", cid="filled"))
    await first.create_order(buy("1950", cid="open"))
    await first.create_order(buy("1940", cid="cancelled"))
    await first.cancel_order("ETH/USDT", "cancelled")
    first.set_price("ETH/USDT", D("1987.25"))
    balances = first.engine.balances()
    orders = first.engine.all_orders()
    await first.close()

    second = make_exchange(markets=markets, balances={"USDT": D("5"), "ETH": D("0")})
    await second.start()
    assert second.engine.all_orders() == orders
    assert second.engine.balances() == balances  # the persisted balances win
    assert second.engine.last_price("ETH/USDT") == D("1987.25")
    assert second.engine.last_price("BTC/USDT") == D("30000")
    assert starts == [D("2000"), D("1987.25")]  # the feed resumes from the last price
    assert [o.client_order_id for o in await second.fetch_open_orders("ETH/USDT")] == ["open"]
    assert (await second.fetch_order("ETH/USDT", "filled")).status == "filled"
    with pytest.raises(DuplicateOrder):
        await second.create_order(buy("1900", cid="open"))
    assert (await second.create_order(buy("1900", cid="new"))).exchange_order_id == "4"
    # The restored open order still fills.
    updates = second.watch_orders("ETH/USDT")
    second.set_price("ETH/USDT", D("1949"))
    update = await next_of(updates)
    assert update.order.client_order_id == "open"
    assert update.fills[0].trade_id == "2"


async def test_a_crash_never_resurrects_a_filled_order(make_exchange: Factory) -> None:
    first = make_exchange()
    await first.start()
    await first.create_order(buy("1990"))
    first.set_price("ETH/USDT", D("1980"))
    first._store.close()  # type: ignore[union-attr]  # a crash: no orderly close
    first._store = None

    second = make_exchange()
    await second.start()
    order = await second.fetch_order("ETH/USDT", "b1")
    assert order.status == "filled"
    assert second.engine.balances()["ETH"].free == D("1.01")


async def test_duplicate_client_id_rejected_while_open(make_exchange: Factory) -> None:
    exchange = make_exchange()
    await exchange.start()
    await exchange.create_order(buy("1990", cid="x"))
    with pytest.raises(DuplicateOrder):
        await exchange.create_order(buy("1980", cid="x"))
    cancels = exchange.watch_orders("ETH/USDT")
    cancelled = await exchange.cancel_order("ETH/USDT", "x")
    assert cancelled.status == "canceled"
    update = await next_of(cancels)
    assert update.order == cancelled
    assert update.fills == ()
    assert (await exchange.create_order(buy("1980", cid="x"))).is_open
    assert len(exchange.engine.all_orders()) == 2
    with pytest.raises(InsufficientFunds):
        await exchange.create_order(buy("1980", amount="1", cid="y"))


async def test_a_marketable_order_publishes_its_fill(make_exchange: Factory) -> None:
    exchange = make_exchange(state_path=None)  # in memory only
    await exchange.start()
    orders = exchange.watch_orders("ETH/USDT")
    placed = await exchange.create_order(buy("2010"))
    assert placed.status == "filled"
    update = await next_of(orders)
    assert update.order == placed
    assert update.fills[0].price == D("2000")


async def test_a_slow_tick_consumer_loses_the_oldest_ticks(make_exchange: Factory) -> None:
    exchange = make_exchange(tick_queue_size=2)
    await exchange.start()
    ticks = exchange.watch_ticks("ETH/USDT")
    orders = exchange.watch_orders("ETH/USDT")
    for n in range(10):
        await exchange.create_order(buy(str(1990 - n), cid=f"o{n}"))
    for price in ["1995", "1985", "1975", "1965"]:
        exchange.set_price("ETH/USDT", D(price))
    assert [(await next_of(ticks)).price for _ in range(2)] == [D("1975"), D("1965")]
    # Order updates are never dropped.
    filled = [(await next_of(orders)).order.client_order_id for _ in range(10)]
    assert sorted(filled) == sorted(f"o{n}" for n in range(10))


async def test_iterators_end_when_the_exchange_closes(make_exchange: Factory) -> None:
    exchange = make_exchange()
    ticks = exchange.watch_ticks("ETH/USDT")
    orders = exchange.watch_orders("ETH/USDT")
    await exchange.start()
    exchange.set_price("ETH/USDT", D("2001"))
    await exchange.close()
    await exchange.close()  # idempotent
    assert [t.price async for t in ticks] == [D("2001")]  # what was queued, then the end
    assert [u async for u in orders] == []
    assert [t async for t in exchange.watch_ticks("ETH/USDT")] == []


async def test_calls_need_a_running_exchange(make_exchange: Factory) -> None:
    exchange = make_exchange()
    with pytest.raises(Disconnected):
        await exchange.create_order(buy("1990"))
    await exchange.start()
    with pytest.raises(RuntimeError):
        await exchange.start()
    with pytest.raises(MarketNotFound):
        await exchange.market("XRP/USDT")
    with pytest.raises(MarketNotFound):
        exchange.watch_ticks("XRP/USDT")
    with pytest.raises(MarketNotFound):
        exchange.watch_orders("XRP/USDT")
    await exchange.close()
    with pytest.raises(Disconnected):
        await exchange.fetch_open_orders("ETH/USDT")
    with pytest.raises(Disconnected):
        exchange.set_price("ETH/USDT", D("1"))


async def test_latency_is_slept_before_each_call(make_exchange: Factory) -> None:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    exchange = make_exchange(latency=0.25, sleep=sleep)
    await exchange.start()
    await exchange.market("ETH/USDT")
    await exchange.create_order(buy("1990"))
    await exchange.fetch_order("ETH/USDT", "b1")
    await exchange.fetch_open_orders("ETH/USDT")
    await exchange.cancel_order("ETH/USDT", "b1")
    assert delays == [0.25] * 5


async def test_unusable_state_raises_startup_error(make_exchange: Factory, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StartupError):
        await make_exchange(state_path=blocker / "sim.db").start()
    corrupt = tmp_path / "corrupt.db"
    store = SimStore(corrupt)
    store.save({"version": 99})
    store.close()
    with pytest.raises(StartupError, match="cannot be restored"):
        await make_exchange(state_path=corrupt).start()


async def test_nothing_is_published_until_it_is_persisted(make_exchange: Factory) -> None:
    exchange = make_exchange()
    await exchange.start()
    store = exchange._store
    assert store is not None
    real_save = store.save
    broken = True

    def save(*args: Any, **kwargs: Any) -> None:
        if broken:
            raise sqlite3.OperationalError("disk I/O error")
        real_save(*args, **kwargs)

    store.save = save  # type: ignore[method-assign]
    orders = exchange.watch_orders("ETH/USDT")
    ticks = exchange.watch_ticks("ETH/USDT")
    with pytest.raises(Disconnected, match="cannot be saved"):
        await exchange.create_order(buy("2010"))  # marketable: filled in memory
    exchange.set_price("ETH/USDT", D("1999"))
    with pytest.raises(Disconnected):
        await exchange.fetch_order("ETH/USDT", "b1")
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await anext(orders)

    broken = False
    order = await exchange.fetch_order("ETH/USDT", "b1")  # persists, then publishes
    assert order.status == "filled"
    update = await next_of(orders)
    assert update.order == order
    exchange.set_price("ETH/USDT", D("1998"))
    assert (await next_of(ticks)).price == D("1998")  # the unsaved 1999 was not published


async def test_abandoned_or_closed_iterators_unsubscribe(make_exchange: Factory) -> None:
    exchange = make_exchange()
    await exchange.start()
    kept = exchange.watch_orders("ETH/USDT")
    dropped = exchange.watch_orders("ETH/USDT")
    closed = exchange.watch_ticks("ETH/USDT")
    assert len(exchange._order_subs["ETH/USDT"]) == 2
    del dropped
    gc.collect()
    assert len(exchange._order_subs["ETH/USDT"]) == 1
    await closed.aclose()  # type: ignore[attr-defined]
    assert len(exchange._tick_subs["ETH/USDT"]) == 0
    assert [t async for t in closed] == []
    await exchange.create_order(buy("2010"))
    assert (await next_of(kept)).order.status == "filled"


async def test_a_failing_feed_is_logged_and_the_exchange_keeps_working(
    make_exchange: Factory,
) -> None:
    class BrokenFeed:
        symbol = "ETH/USDT"

        def __iter__(self):  # type: ignore[no-untyped-def]
            yield FeedStep(0.0, D("2001"))
            raise RuntimeError("feed broke")

    exchange = make_exchange(
        markets={ETH.symbol: SimMarket(ETH, D("2000"), lambda rules, start: BrokenFeed())}
    )
    ticks = exchange.watch_ticks("ETH/USDT")
    with structlog.testing.capture_logs() as logs:
        await exchange.start()
        assert (await next_of(ticks)).price == D("2001")
        done, _ = await asyncio.wait(set(exchange._tasks), timeout=TIMEOUT)
        assert len(done) == 1
        await asyncio.sleep(0)  # let the done callbacks run
    failed = next(e for e in logs if e["event"] == "sim_feed_failed")
    assert "feed broke" in failed["error"]
    assert failed["log_level"] == "error"
    assert (await exchange.create_order(buy("1990"))).is_open


async def test_fetch_order_fills(make_exchange: Factory) -> None:
    exchange: Exchange = make_exchange()  # mypy checks the protocol here
    await exchange.start()
    await exchange.create_order(buy("1990", cid="a"))
    assert await exchange.fetch_order_fills("ETH/USDT", "a") == []
    assert isinstance(exchange, SimulatedExchange)
    exchange.set_price("ETH/USDT", D("1980"))
    (fill,) = await exchange.fetch_order_fills("ETH/USDT", "a")
    assert (fill.price, fill.amount, fill.fee, fill.trade_id) == (
        D("1990"),
        D("0.01"),
        D("0.0199"),
        "1",
    )
    await exchange.close()
    restarted = make_exchange()
    await restarted.start()
    assert await restarted.fetch_order_fills("ETH/USDT", "a") == [fill]
    with pytest.raises(OrderNotFound):
        await restarted.fetch_order_fills("ETH/USDT", "nope")


async def test_orders_since_a_time_in_any_state(make_exchange: Factory) -> None:
    now = [100.0]
    exchange = make_exchange(clock=lambda: now[0])
    await exchange.start()
    await exchange.create_order(buy("1990", cid="early"))
    now[0] = 300.0
    await exchange.create_order(buy("1980", cid="filled"))
    await exchange.create_order(buy("1970", cid="cancelled"))
    await exchange.cancel_order("ETH/USDT", "cancelled")
    exchange.set_price("ETH/USDT", D("1975"))
    since = {
        o.client_order_id: o.status for o in await exchange.fetch_orders_since("ETH/USDT", 250)
    }
    assert since == {"filled": "filled", "cancelled": "canceled"}
