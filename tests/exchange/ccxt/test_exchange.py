"""``CcxtExchange`` with ccxt's real ``binance`` class against the simulator process.

Every fault test ends with the simulator's own order log: exactly one order per client
order id, whatever the fault did to the answers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import pytest

from quantmesh.domain import OrderRequest, OrderUpdate, Tick
from quantmesh.errors import (
    AuthenticationFailed,
    Disconnected,
    DuplicateOrder,
    InsufficientFunds,
    InvalidOrder,
    MarketNotFound,
    OrderNotFound,
    RateLimited,
    RequestExpired,
)
from quantmesh.exchange.ccxt.client import create_client
from quantmesh.exchange.ccxt.exchange import CcxtExchange, CcxtSettings
from quantmesh.exchange.ccxt.streams import StreamSettings
from tests.exchange.sim.server.support import (
    API_KEY,
    API_SECRET,
    BINANCE_OPTIONS,
    SimProcess,
    binance_urls,
    running_sim,
)

ETH = "ETH/USDT"
FAST = StreamSettings(
    price_stale_after=3.0,
    price_poll_interval=0.2,
    order_poll_interval=0.2,
    order_resync_interval=1.0,
    stream_failures_before_polling=3,
    stream_retry_after=2.0,
    reconnect_initial_delay=0.05,
    reconnect_max_delay=0.5,
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with running_sim(tmp_path_factory.mktemp("sim"), "--seed", "9") as process:
        yield process


@pytest.fixture(autouse=True)
def _reset(sim: SimProcess) -> Iterator[None]:
    sim.reset_faults()
    sim.set_price(ETH, "2000")
    yield
    sim.reset_faults()


def make(
    sim: SimProcess, *, timeout: float = 3.0, stream: StreamSettings = FAST, **kw: Any
) -> CcxtExchange:
    client = create_client(
        "binance",
        api_key=kw.pop("api_key", API_KEY),
        secret=kw.pop("secret", API_SECRET),
        urls=binance_urls(sim.port),
        options=BINANCE_OPTIONS,
        timeout=timeout,
    )
    return CcxtExchange(client, CcxtSettings(stream=stream, **kw))


@pytest.fixture
async def exchange(sim: SimProcess) -> AsyncIterator[CcxtExchange]:
    ex = make(sim)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.close()


def cid() -> str:
    return f"qm.t{uuid.uuid4().hex[:5]}.B{uuid.uuid4().int % 1000}.0"


def buy(price: str, client_order_id: str | None = None, amount: str = "0.01") -> OrderRequest:
    return OrderRequest(ETH, "buy", Decimal(price), Decimal(amount), client_order_id or cid())


def accepted(sim: SimProcess, client_order_id: str) -> list[dict[str, Any]]:
    return [o for o in sim.orders() if o["client_order_id"] == client_order_id]


async def next_update(
    updates: AsyncIterator[OrderUpdate], cid_: str, timeout: float = 10
) -> OrderUpdate:
    async with asyncio.timeout(timeout):
        async for update in updates:
            if update.order.client_order_id == cid_ and not update.order.is_open:
                return update
    raise AssertionError("order stream ended")


async def test_market_rules_come_from_load_markets(exchange: CcxtExchange) -> None:
    rules = await exchange.market(ETH)
    assert (rules.tick_size, rules.lot_size, rules.min_notional) == (
        Decimal("0.01"),
        Decimal("0.0001"),
        Decimal(5),
    )
    assert (rules.base, rules.quote) == ("ETH", "USDT")
    with pytest.raises(MarketNotFound):
        await exchange.market("DOGE/USDT")
    assert exchange.name == "binance"


async def test_prices_stream_and_freshness_is_exposed(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    ticks = exchange.watch_ticks(ETH)
    assert exchange.price_age(ETH) is None and not exchange.price_fresh(ETH)
    first: Tick = await asyncio.wait_for(anext(ticks), 10)
    assert first.price == Decimal(2000)
    sim.set_price(ETH, "2001.5")
    async with asyncio.timeout(5):
        async for tick in ticks:
            if tick.price == Decimal("2001.5"):
                break
    age = exchange.price_age(ETH)
    assert age is not None and age < 1 and exchange.price_fresh(ETH)


async def test_place_fetch_cancel(exchange: CcxtExchange, sim: SimProcess) -> None:
    request = buy("1500")
    order = await exchange.create_order(request)
    assert order.client_order_id == request.client_order_id and order.is_open
    assert order.price == Decimal(1500) and order.amount == Decimal("0.01")
    assert (await exchange.fetch_order(ETH, request.client_order_id)).is_open
    assert request.client_order_id in {
        o.client_order_id for o in await exchange.fetch_open_orders(ETH)
    }
    cancelled = await exchange.cancel_order(ETH, request.client_order_id)
    assert cancelled.status == "canceled"
    again = await exchange.cancel_order(ETH, request.client_order_id)  # final state, no error
    assert again.status == "canceled"
    with pytest.raises(OrderNotFound):
        await exchange.fetch_order(ETH, cid())
    since = await exchange.fetch_orders_since(ETH, order.created_at - 1)
    assert request.client_order_id in {o.client_order_id for o in since}


async def test_fill_arrives_on_the_order_stream_with_its_trade(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    updates = exchange.watch_orders(ETH)
    await asyncio.sleep(0.5)
    request = buy("1995")
    await exchange.create_order(request)
    sim.set_price(ETH, "1994")
    update = await next_update(updates, request.client_order_id)
    assert update.order.status == "filled" and update.order.filled == Decimal("0.01")
    assert [(f.price, f.amount) for f in update.fills] == [(Decimal(1995), Decimal("0.01"))]
    assert update.fills[0].client_order_id == request.client_order_id
    fills = await exchange.fetch_order_fills(ETH, request.client_order_id)
    assert [f.trade_id for f in fills] == [update.fills[0].trade_id]


async def test_duplicate_client_order_id_means_already_placed(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    request = buy("1500")
    await exchange.create_order(request)
    with pytest.raises(DuplicateOrder) as caught:
        await exchange.create_order(request)
    assert caught.value.client_order_id == request.client_order_id
    assert len(accepted(sim, request.client_order_id)) == 1
    await exchange.cancel_order(ETH, request.client_order_id)


async def test_rejections_are_final(exchange: CcxtExchange, sim: SimProcess) -> None:
    before = sim.stats()["requests"]
    with pytest.raises(InsufficientFunds):
        await exchange.create_order(buy("1500", amount="10000"))
    with pytest.raises(InvalidOrder):
        await exchange.create_order(buy("1500", amount="0.001"))  # below min notional
    assert sim.stats()["requests"] - before == 2  # one call each, nothing retried


async def test_timeout_after_accept_finds_the_order_instead_of_resending(sim: SimProcess) -> None:
    exchange = make(sim, timeout=1.0)
    await exchange.start()
    try:
        sim.faults(accept_timeout_rate=1, hang=3)
        request = buy("1500")
        order = await exchange.create_order(request)  # times out, then looked up
        assert order.client_order_id == request.client_order_id and order.is_open
        sim.reset_faults()
        assert len(accepted(sim, request.client_order_id)) == 1
        await exchange.cancel_order(ETH, request.client_order_id)
    finally:
        await exchange.close()


async def test_server_errors_leave_the_outcome_unknown_and_place_nothing(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    sim.faults(error_rate=1)
    request = buy("1500")
    with pytest.raises(Disconnected):
        await exchange.create_order(request)
    sim.reset_faults()
    assert accepted(sim, request.client_order_id) == []
    with pytest.raises(OrderNotFound):  # what the trader's later lookup finds
        await exchange.fetch_order(ETH, request.client_order_id)


async def test_rate_limit_blocks_writes_for_retry_after(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    sim.faults(rate_limit_rate=1, retry_after=2)
    with pytest.raises(RateLimited) as caught:
        await exchange.create_order(buy("1500"))
    assert caught.value.retry_after == pytest.approx(2)
    sim.reset_faults()
    before = sim.stats()["requests"]
    with pytest.raises(RateLimited):  # still inside Retry-After: not even sent
        await exchange.create_order(buy("1500"))
    assert sim.stats()["requests"] == before
    started = time.monotonic()
    orders = await exchange.fetch_open_orders(ETH)  # a read waits the block out
    assert time.monotonic() - started > 1.0
    assert isinstance(orders, list)


async def test_latency_is_survived(exchange: CcxtExchange, sim: SimProcess) -> None:
    sim.faults(latency=0.3)
    request = buy("1500")
    assert (await exchange.create_order(request)).is_open
    assert (await exchange.cancel_order(ETH, request.client_order_id)).status == "canceled"
    assert len(accepted(sim, request.client_order_id)) == 1


async def test_dropped_websockets_reconnect_and_lose_no_fill(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    ticks = exchange.watch_ticks(ETH)
    updates = exchange.watch_orders(ETH)
    await asyncio.wait_for(anext(ticks), 10)
    await asyncio.sleep(0.5)
    assert sim.drop_ws() >= 1
    request = buy("1980")
    await exchange.create_order(request)
    sim.set_price(ETH, "1979")  # fills while the streams may be down
    update = await next_update(updates, request.client_order_id)
    assert update.order.status == "filled" and len(update.fills) == 1
    async with asyncio.timeout(10):  # prices flow again after the reconnect
        async for tick in ticks:
            if tick.price == Decimal(1979):
                break
    assert len(accepted(sim, request.client_order_id)) == 1


async def test_websockets_dropped_every_second_fall_back_to_polling(sim: SimProcess) -> None:
    sim.faults(ws_drop_after=0.3)
    exchange = make(sim)
    await exchange.start()
    try:
        ticks = exchange.watch_ticks(ETH)
        updates = exchange.watch_orders(ETH)
        await asyncio.wait_for(anext(ticks), 10)
        request = buy("1970")
        await exchange.create_order(request)
        sim.set_price(ETH, "1969")
        update = await next_update(updates, request.client_order_id, timeout=15)
        assert update.fills
        async with asyncio.timeout(10):
            async for tick in ticks:
                if tick.price == Decimal(1969):
                    break
    finally:
        await exchange.close()


async def test_rest_polling_when_streams_are_off(sim: SimProcess) -> None:
    polling = StreamSettings(
        streams=False, price_poll_interval=0.2, order_poll_interval=0.2, price_stale_after=3
    )
    exchange = make(sim, stream=polling)
    await exchange.start()
    try:
        ticks = exchange.watch_ticks(ETH)
        updates = exchange.watch_orders(ETH)
        await asyncio.wait_for(anext(ticks), 10)
        await asyncio.sleep(0.5)  # the poller's baseline of open orders
        request = buy("1960")
        await exchange.create_order(request)
        sim.set_price(ETH, "1959")
        update = await next_update(updates, request.client_order_id)
        assert update.order.status == "filled" and len(update.fills) == 1
    finally:
        await exchange.close()


async def test_bad_credentials_fail_start(sim: SimProcess) -> None:
    before = len(sim.orders())
    credentials: list[dict[str, Any]] = [
        {"secret": "wrong"},
        {"api_key": "unknown"},
        {"api_key": "", "secret": ""},
    ]
    for kw in credentials:
        exchange = make(sim, **kw)
        with pytest.raises(AuthenticationFailed) as caught:
            await exchange.start()
        assert API_SECRET not in str(caught.value)
        await exchange.close()
    assert len(sim.orders()) == before


# -- request expiry ---------------------------------------------------------------------------


def actions_of(sim: SimProcess, client_order_id: str) -> list[dict[str, Any]]:
    return [a for a in sim.actions() if a["client_order_id"] == client_order_id]


class HeldFetch:
    """Wraps the ccxt client's HTTP call: an order create, already signed by ccxt, waits
    at ``release`` before it goes out (a process frozen between signing and sending)."""

    def __init__(self, client: Any) -> None:
        self._fetch = client.fetch
        self.signed = asyncio.Event()
        self.release = asyncio.Event()
        self.bodies: list[str] = []
        client.fetch = self

    async def __call__(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        if method == "POST" and url.endswith("/api/v3/order"):
            self.bodies.append(str(body))
            self.signed.set()
            await self.release.wait()
        return await self._fetch(url, method, headers, body)


async def test_a_create_past_its_expiry_is_not_sent(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    request = replace(buy("1500"), expires_at=time.monotonic() - 0.001)
    with pytest.raises(RequestExpired):
        await exchange.create_order(request)
    almost = replace(buy("1500"), expires_at=time.monotonic() + 0.04)  # below the minimum
    with pytest.raises(RequestExpired):
        await exchange.create_order(almost)
    for r in (request, almost):
        assert accepted(sim, r.client_order_id) == []
        assert actions_of(sim, r.client_order_id) == []  # never reached the exchange


async def test_a_create_held_back_past_its_expiry_is_refused_by_the_exchange(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    held = HeldFetch(exchange.client)
    request = replace(buy("1500"), expires_at=time.monotonic() + 0.5)
    create = asyncio.create_task(exchange.create_order(request))
    await asyncio.wait_for(held.signed.wait(), 5)  # signed with a window ending before 0.5 s
    window = int(dict(parse_qsl(held.bodies[0]))["recvWindow"])
    assert 0 < window <= 500 - 20  # the lease's time left less the margins
    assert request.expires_at is not None
    # the process "thaws" after its lease has ended
    await asyncio.sleep(request.expires_at - time.monotonic() + 0.05)
    held.release.set()
    with pytest.raises(RequestExpired, match="expired"):
        await create
    assert accepted(sim, request.client_order_id) == []
    [refused] = actions_of(sim, request.client_order_id)
    assert (refused["result"], refused["code"]) == ("rejected", -1021)


async def test_a_create_and_cancel_with_time_left_go_through(
    exchange: CcxtExchange, sim: SimProcess
) -> None:
    held = HeldFetch(exchange.client)
    held.release.set()
    request = replace(buy("1500"), expires_at=time.monotonic() + 5.0)
    order = await exchange.create_order(request)
    assert order.is_open and len(accepted(sim, request.client_order_id)) == 1
    window = int(dict(parse_qsl(held.bodies[0]))["recvWindow"])
    assert 4500 < window <= 5000  # the lease's time left, not ccxt's default 10 s
    cancelled = await exchange.cancel_order(
        ETH, request.client_order_id, expires_at=time.monotonic() + 5.0
    )
    assert cancelled.status == "canceled"
    with pytest.raises(RequestExpired):  # a late cancel is not sent: the order stays
        await exchange.cancel_order(ETH, request.client_order_id, time.monotonic() - 1)


async def test_the_exchange_clock_is_measured_and_used_when_the_host_clock_is_off(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The simulator's clock runs 30 s ahead of this host's: the adapter measures that,
    ccxt's own timestamps (the balance read at start) use it, and so do the expiries."""
    with running_sim(tmp_path_factory.mktemp("skewed"), "--clock-skew", "30") as skewed:
        skewed.set_price(ETH, "2000")
        exchange = make(skewed)
        await exchange.start()  # fetch_balance would be refused 30 s off (-1021)
        try:
            offset = exchange.clock_offset()
            assert offset is not None
            assert offset.offset == pytest.approx(30.0, abs=0.5)
            assert 0 <= offset.uncertainty < 0.5
            assert abs(offset.measured_at - time.time()) < 10
            request = replace(buy("1500"), expires_at=time.monotonic() + 3.0)
            assert (await exchange.create_order(request)).is_open
            await exchange.cancel_order(ETH, request.client_order_id, time.monotonic() + 3)
        finally:
            await exchange.close()


async def test_only_our_orders_are_remembered(exchange: CcxtExchange, sim: SimProcess) -> None:
    client = exchange.client
    foreign = await client.create_order(ETH, "limit", "buy", 0.01, 1400, {"clientOrderId": "bot7"})
    ours = buy("1400")
    await exchange.create_order(ours)
    try:
        listed = {o.client_order_id for o in await exchange.fetch_open_orders(ETH)}
        assert {"bot7", ours.client_order_id} <= listed  # listed, ours or not
        sizes = exchange.memory_sizes()
        assert exchange._ids.get("bot7") == ""
        assert exchange._ids.get(ours.client_order_id) != ""
        await exchange.cancel_order(ETH, ours.client_order_id)
        assert exchange.memory_sizes()["ids_open"] == sizes["ids_open"] - 1
    finally:
        await client.cancel_order(foreign["id"], ETH)
