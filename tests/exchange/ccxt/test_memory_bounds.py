"""The adapter's maps keyed by order or trade id stay bounded: only our own orders are
remembered, closed ones only for a while; and the soak benchmark (tiny sizes) runs."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest

from quantmesh.domain import Order, OrderStatus
from quantmesh.exchange.ccxt.ids import OrderIds
from quantmesh.exchange.ccxt.streams import OrderLoop, StreamSettings

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # bench/ is a top-level package next to quantmesh/
    sys.path.insert(0, str(ROOT))

from bench.__main__ import soak_table
from bench.bench_soak import maps_at, measure_soak
from bench.table import render


def test_ids_of_closed_orders_are_kept_only_among_the_recent() -> None:
    ids = OrderIds(recent=3, limit=5)
    for n in range(10):
        ids.note(f"qm.a.B{n}.0", f"x{n}", True)
        ids.note(f"qm.a.B{n}.0", f"x{n}", False)
    assert ids.sizes() == {"open": 0, "recently_closed": 3}
    assert ids.get("qm.a.B9.0") == "x9" and ids.get("qm.a.B0.0") == ""
    ids.note("qm.a.B8.0", "x8b", True)  # the id placed again: open once more
    assert ids.get("qm.a.B8.0") == "x8b" and ids.sizes() == {"open": 1, "recently_closed": 2}


def test_open_ids_whose_close_is_never_seen_are_bounded() -> None:
    ids = OrderIds(recent=3, limit=5)
    for n in range(8):
        ids.note(f"qm.a.B{n}.0", f"x{n}", True)
    assert ids.sizes()["open"] == 5 and ids.evicted == 3
    assert ids.get("qm.a.B0.0") == "" and ids.get("qm.a.B7.0") == "x7"


def order(cid: str, xid: str, status: OrderStatus = "open") -> Order:
    amount = Decimal("0.01")
    return Order("ETH/USDT", "buy", Decimal(1500), amount, cid, xid, status, Decimal(0), 1.0, 1.0)


async def test_the_order_loop_follows_and_looks_up_our_orders_only() -> None:
    listings = [
        [order("qm.a.B1.0", "1"), order("bot-7", "2")],  # baseline
        [],  # both left the open orders
    ]
    looked_up: list[str] = []
    published: list[Any] = []

    async def fetch_open(symbol: str) -> list[Order]:
        return listings.pop(0)

    async def fetch_order(symbol: str, cid: str) -> Order:
        looked_up.append(cid)
        return order(cid, "1", "canceled")

    async def unused(*args: Any) -> Any:
        raise AssertionError("not called")

    class Client:
        has: ClassVar[dict[str, bool]] = {"watchOrders": False}

    loop = OrderLoop(
        "ETH/USDT",
        Client(),
        StreamSettings(streams=False),
        fetch_open=fetch_open,
        fetch_order=fetch_order,
        fetch_fills=unused,
        convert=lambda raw, currency: pytest.fail("no order is converted here"),
        publish=published.append,
        ours=lambda cid: cid.startswith("qm."),
        clock=lambda: 0.0,
        sleep=unused,
        rng=lambda: 0.5,
    )
    await loop._resync()
    assert loop.sizes()["followed"] == 1
    loop.track(order("bot-8", "3"))  # another bot's order is not followed either
    assert loop.sizes()["followed"] == 1
    await loop._resync()
    assert looked_up == ["qm.a.B1.0"]
    assert [u.order.client_order_id for u in published] == ["qm.a.B1.0"]
    assert loop.sizes()["followed"] == 0


def test_the_soak_benchmark_reports_flat_maps() -> None:
    r = measure_soak(400, 40)
    for run in ("adapter", "sender"):
        assert r[f"{run}_cycles_per_s"] > 0
        n = int(r[f"{run}_cycles"])
        end = maps_at(r, run, n)
        assert end and all(size <= 10_000 for size in end.values()), end
        assert end["ids_open"] == 0  # every order closed, none left behind
    assert r["adapter@400 ids_recently_closed"] <= 1024
    assert r["adapter_signed_windows"] >= 400  # every create and cancel carried its window
    assert r["sender_round_trips_pnl"] > 0
    assert "soak: CcxtExchange, 400 cycles" in render(soak_table(r))
