"""The matching engine: fills, balances, fees, rejections, snapshots."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantmesh.domain import OrderRequest, Side
from quantmesh.errors import (
    DuplicateOrder,
    InsufficientFunds,
    InvalidOrder,
    MarketNotFound,
    OrderNotFound,
    OrderRejected,
)
from quantmesh.exchange.sim.matching import Balance, MatchingEngine
from tests.exchange.support import BTC, ETH
from tests.support import FakeClock

D = Decimal
FEE = D("0.001")


def make_engine(clock: FakeClock, usdt: str = "1000", eth: str = "1") -> MatchingEngine:
    return MatchingEngine(
        {ETH.symbol: ETH, BTC.symbol: BTC}, {"USDT": D(usdt), "ETH": D(eth)}, FEE, clock
    )


def req(
    side: Side, price: str, amount: str, cid: str = "c1", symbol: str = "ETH/USDT"
) -> OrderRequest:
    return OrderRequest(symbol, side, D(price), D(amount), cid)


def test_limit_buy_rests_until_crossed_then_fills_at_its_own_price(clock: FakeClock) -> None:
    engine = make_engine(clock)
    engine.on_price("ETH/USDT", D("2050"))
    order = engine.place(req("buy", "2000", "0.01"))
    assert order.status == "open"
    assert order.exchange_order_id == "1"
    assert order.filled == 0
    assert engine.balances()["USDT"] == Balance(D("979.98"), D("20.02"))

    assert engine.on_price("ETH/USDT", D("2000.01")) == []
    assert engine.get("ETH/USDT", "c1").is_open

    clock.now += 5
    updates = engine.on_price("ETH/USDT", D("1990.50"))
    assert len(updates) == 1
    filled, (fill,) = updates[0].order, updates[0].fills
    assert filled.status == "filled"
    assert filled.filled == D("0.01")
    assert filled.updated_at == clock.now
    assert fill.price == D("2000")  # the order's price, not the tick's
    assert fill.amount == D("0.01")
    assert fill.fee == D("0.02")
    assert fill.fee_currency == "USDT"
    assert fill.trade_id == "1"
    assert fill.client_order_id == "c1"
    assert fill.exchange_order_id == "1"
    assert engine.order_fills("ETH/USDT", "c1") == [fill]
    assert engine.balances() == {
        "ETH": Balance(D("1.01"), D(0)),
        "USDT": Balance(D("979.98"), D(0)),
    }
    assert engine.open_orders("ETH/USDT") == []
    assert engine.last_price("ETH/USDT") == D("1990.50")


def test_limit_sell_fills_when_price_reaches_it(clock: FakeClock) -> None:
    engine = make_engine(clock)
    engine.on_price("ETH/USDT", D("2000"))
    engine.place(req("sell", "2100", "0.5"))
    assert engine.balances()["ETH"] == Balance(D("0.5"), D("0.5"))
    assert engine.on_price("ETH/USDT", D("2099.99")) == []
    (update,) = engine.on_price("ETH/USDT", D("2100"))  # touching is enough
    assert update.fills[0].price == D("2100")
    assert update.fills[0].fee == D("1.05")
    assert engine.balances() == {
        "ETH": Balance(D("0.5"), D(0)),
        "USDT": Balance(D("2048.95"), D(0)),  # 1000 + 1050 - 1.05
    }


def test_marketable_orders_fill_at_once_at_the_last_price(clock: FakeClock) -> None:
    engine = make_engine(clock)
    engine.on_price("ETH/USDT", D("2000"))
    buy = engine.submit(req("buy", "2010", "0.01", "b"))
    assert buy.order.status == "filled"
    assert buy.fills[0].price == D("2000")
    assert buy.fills[0].fee == D("0.02")
    # Reserved 20.1201, paid 20.02: the rest is released.
    assert engine.balances()["USDT"] == Balance(D("979.98"), D(0))

    sell = engine.submit(req("sell", "1990", "0.02", "s"))
    assert sell.order.status == "filled"
    assert sell.fills[0].price == D("2000")
    assert sell.fills[0].trade_id == "2"
    assert engine.balances() == {
        "ETH": Balance(D("0.99"), D(0)),
        "USDT": Balance(D("1019.94"), D(0)),  # 979.98 + 40 - 0.04
    }
    # At exactly the last price an order is marketable too.
    assert engine.place(req("buy", "2000", "0.01", "eq")).status == "filled"


def test_without_a_last_price_orders_rest(clock: FakeClock) -> None:
    engine = make_engine(clock)
    assert engine.place(req("buy", "2000", "0.01")).is_open
    assert engine.last_price("ETH/USDT") is None
    assert engine.order_fills("ETH/USDT", "c1") == []


def test_a_price_fills_every_crossed_order_in_price_priority(clock: FakeClock) -> None:
    engine = make_engine(clock, usdt="10000")
    engine.on_price("ETH/USDT", D("2000"))
    for cid, price in [("a", "1900"), ("b", "1950"), ("c", "1800"), ("d", "1950")]:
        engine.place(req("buy", price, "0.01", cid))
    engine.place(req("sell", "2100", "0.01", "s"))
    updates = engine.on_price("ETH/USDT", D("1900"))
    assert [u.order.client_order_id for u in updates] == ["b", "d", "a"]
    assert [u.fills[0].trade_id for u in updates] == ["1", "2", "3"]
    assert {o.client_order_id for o in engine.open_orders("ETH/USDT")} == {"c", "s"}
    assert engine.on_price("ETH/USDT", D("1900")) == []  # nothing fills twice


def test_cancel_releases_the_reservation(clock: FakeClock) -> None:
    engine = make_engine(clock)
    engine.place(req("buy", "2000", "0.01", "b"))
    engine.place(req("sell", "2500", "0.3", "s"))
    assert engine.balances()["USDT"].locked == D("20.02")
    assert engine.balances()["ETH"].locked == D("0.3")

    cancelled = engine.cancel("ETH/USDT", "b")
    assert cancelled.status == "canceled"
    assert engine.cancel("ETH/USDT", "s").status == "canceled"
    assert engine.balances() == {
        "ETH": Balance(D("1"), D(0)),
        "USDT": Balance(D("1000"), D(0)),
    }
    assert engine.open_orders("ETH/USDT") == []
    assert engine.cancel("ETH/USDT", "b") == cancelled  # already closed: as is
    assert engine.balances()["USDT"] == Balance(D("1000"), D(0))


def test_cancelling_a_filled_order_returns_it_unchanged(clock: FakeClock) -> None:
    engine = make_engine(clock)
    engine.place(req("buy", "2000", "0.01"))
    (update,) = engine.on_price("ETH/USDT", D("1999"))
    assert engine.cancel("ETH/USDT", "c1") == update.order
    assert engine.balances()["ETH"].free == D("1.01")


def test_unknown_orders_and_markets(clock: FakeClock) -> None:
    engine = make_engine(clock)
    with pytest.raises(OrderNotFound):
        engine.cancel("ETH/USDT", "nope")
    with pytest.raises(OrderNotFound):
        engine.get("ETH/USDT", "nope")
    engine.place(req("buy", "2000", "0.01"))
    with pytest.raises(OrderNotFound):  # ids are per symbol
        engine.get("BTC/USDT", "c1")
    for call in (
        lambda: engine.get("DOGE/USDT", "c1"),
        lambda: engine.open_orders("DOGE/USDT"),
        lambda: engine.on_price("DOGE/USDT", D(1)),
        lambda: engine.place(req("buy", "1", "20", symbol="DOGE/USDT")),
    ):
        with pytest.raises(MarketNotFound):
            call()


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (req("buy", "2000.001", "0.01"), InvalidOrder, "tick size"),
        (req("buy", "0", "0.01"), InvalidOrder, "positive"),
        (req("buy", "-2000", "0.01"), InvalidOrder, "positive"),
        (req("buy", "2000", "0.01005"), InvalidOrder, "lot size"),
        (req("buy", "2000", "0"), InvalidOrder, "positive"),
        (req("buy", "20000", "0.0005"), InvalidOrder, "minimum amount"),
        (req("buy", "2000", "0.004"), InvalidOrder, "minimum notional"),
        (req("sell", "2000", "0.004"), InvalidOrder, "minimum notional"),
        (req("buy", "2000", "0.01", cid=""), InvalidOrder, "client order id"),
        (req("buy", "2000", "0.01", cid="x" * 37), InvalidOrder, "client order id"),
        (req("buy", "2000", "0.01", cid="a b"), InvalidOrder, "client order id"),
        (req("buy", "2000", "0.5"), InsufficientFunds, "USDT"),  # 1001 > 1000
        (req("sell", "2000", "1.0001"), InsufficientFunds, "ETH"),
        (req("buy", "2000", "0.01", symbol="XRP/USDT"), MarketNotFound, "XRP/USDT"),
    ],
)
def test_rejections_change_nothing(
    clock: FakeClock, request_: OrderRequest, error: type[Exception], message: str
) -> None:
    engine = make_engine(clock)
    before = engine.snapshot()
    with pytest.raises(error, match=message):
        engine.place(request_)
    assert engine.snapshot() == before
    assert engine.all_orders() == []


def test_rejection_reasons(clock: FakeClock) -> None:
    engine = make_engine(clock)
    with pytest.raises(OrderRejected) as info:
        engine.place(req("buy", "2000", "1"))
    assert info.value.reason == "insufficient_funds"
    with pytest.raises(OrderRejected) as info:
        engine.place(req("buy", "2000.5", "0.000001"))
    assert info.value.reason == "invalid_order"


def test_the_buy_reservation_includes_the_fee(clock: FakeClock) -> None:
    engine = make_engine(clock, usdt="20.02")
    engine.place(req("buy", "2000", "0.01", "ok"))  # needs exactly 20.02
    assert engine.balances()["USDT"] == Balance(D(0), D("20.02"))
    engine.cancel("ETH/USDT", "ok")
    engine2 = make_engine(clock, usdt="20.01")
    with pytest.raises(InsufficientFunds):
        engine2.place(req("buy", "2000", "0.01"))


def test_duplicate_client_id_rejected_only_while_open(clock: FakeClock) -> None:
    engine = make_engine(clock)
    first = engine.place(req("buy", "2000", "0.01", "dup"))
    with pytest.raises(DuplicateOrder) as info:
        engine.place(req("buy", "1900", "0.01", "dup"))
    assert info.value.client_order_id == "dup"
    assert info.value.reason == "duplicate"
    # The same id on another symbol is another order.
    assert engine.place(req("buy", "30000", "0.001", "dup", symbol="BTC/USDT")).is_open

    engine.cancel("ETH/USDT", "dup")
    second = engine.place(req("buy", "1900", "0.01", "dup"))
    assert second.is_open
    assert second.exchange_order_id != first.exchange_order_id
    assert engine.get("ETH/USDT", "dup") == second  # the latest one
    engine.on_price("ETH/USDT", D("1800"))  # fills it
    third = engine.place(req("buy", "1700", "0.01", "dup"))  # a filled id is reusable too
    assert [o.exchange_order_id for o in engine.all_orders()] == ["1", "2", "3", "4"]
    assert [o.status for o in engine.all_orders()] == ["canceled", "open", "filled", "open"]
    assert engine.get("ETH/USDT", "dup") == third


def test_snapshot_restore_round_trip(clock: FakeClock) -> None:
    engine = make_engine(clock)
    engine.on_price("ETH/USDT", D("2000"))
    engine.place(req("buy", "1950", "0.01", "open-buy"))
    engine.place(req("sell", "2050", "0.1", "open-sell"))
    engine.place(req("buy", "1980", "0.01", "cancelled"))
    engine.cancel("ETH/USDT", "cancelled")
    engine.place(req("buy", "1970", "0.01", "filled"))
    assert engine.on_price("ETH/USDT", D("1975")) == []
    assert len(engine.on_price("ETH/USDT", D("1965.55"))) == 1
    engine.place(req("buy", "2000", "0.01", "taker"))
    engine.on_price("BTC/USDT", D("30000"))

    snapshot = json.loads(json.dumps(engine.snapshot()))  # survives JSON
    restored = make_engine(clock, usdt="0", eth="0")
    restored.restore(snapshot)
    assert restored.all_orders() == engine.all_orders()
    assert restored.fills() == engine.fills()
    assert len(restored.fills()) == 2
    assert restored.balances() == engine.balances()
    assert restored.open_orders("ETH/USDT") == engine.open_orders("ETH/USDT")
    assert restored.last_price("ETH/USDT") == D("1965.55")
    assert restored.last_price("BTC/USDT") == D("30000")
    assert restored.snapshot() == engine.snapshot()

    # Open ids stay taken, counters continue, reservations are released correctly.
    with pytest.raises(DuplicateOrder):
        restored.place(req("buy", "1900", "0.01", "open-buy"))
    assert restored.place(req("buy", "1900", "0.01", "new")).exchange_order_id == "6"
    (update,) = restored.on_price("ETH/USDT", D("2050"))
    assert update.order.client_order_id == "open-sell"
    assert update.fills[0].trade_id == "3"
    restored.cancel("ETH/USDT", "open-buy")
    restored.cancel("ETH/USDT", "new")
    assert restored.balances()["USDT"].locked == 0
    assert restored.balances()["ETH"].locked == 0


def test_restore_rejects_an_invalid_snapshot_and_keeps_the_state(clock: FakeClock) -> None:
    engine = make_engine(clock)
    engine.place(req("buy", "2000", "0.01"))
    before = engine.snapshot()
    bad = engine.snapshot()
    bad["orders"][0]["price"] = "not a number"
    for snapshot in (bad, {"version": 99}, {}):
        with pytest.raises(ValueError, match="invalid matching engine snapshot"):
            engine.restore(snapshot)
    assert engine.snapshot() == before


def test_constructor_checks(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="fee rate"):
        MatchingEngine({ETH.symbol: ETH}, {}, D("1"), clock)
    with pytest.raises(ValueError, match="differs"):
        MatchingEngine({"X/Y": ETH}, {}, FEE, clock)
    with pytest.raises(ValueError, match="negative"):
        MatchingEngine({ETH.symbol: ETH}, {"USDT": D(-1)}, FEE, clock)


_op = st.one_of(
    st.tuples(
        st.just("place"),
        st.sampled_from(["buy", "sell"]),
        st.integers(1900, 2100),
        st.integers(50, 3000),
    ),
    st.tuples(st.just("price"), st.integers(1800, 2200)),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_op, max_size=40))
def test_balances_are_conserved_and_locks_match_open_orders(ops: list[tuple[Any, ...]]) -> None:
    engine = make_engine(FakeClock(), usdt="100", eth="0.05")
    engine.on_price("ETH/USDT", D("2000"))
    for n, op in enumerate(ops):
        if op[0] == "place":
            _, side, price, lots = op
            with contextlib.suppress(InvalidOrder, InsufficientFunds):
                engine.place(req(side, str(price), str(D(lots) * ETH.lot_size), f"o{n}"))
        elif op[0] == "price":
            engine.on_price("ETH/USDT", D(op[1]))
        else:
            orders = engine.all_orders()
            if orders:
                engine.cancel("ETH/USDT", orders[op[1] % len(orders)].client_order_id)

        balances = engine.balances()
        assert all(b.free >= 0 and b.locked >= 0 for b in balances.values())
        open_orders = engine.open_orders("ETH/USDT")
        assert balances["USDT"].locked == sum(
            (o.price * o.amount * (1 + FEE) for o in open_orders if o.side == "buy"), D(0)
        )
        assert balances["ETH"].locked == sum(
            (o.amount for o in open_orders if o.side == "sell"), D(0)
        )
        fills = engine.fills()
        bought = sum((f.amount for f in fills if f.side == "buy"), D(0))
        sold = sum((f.amount for f in fills if f.side == "sell"), D(0))
        spent = sum((f.price * f.amount + f.fee for f in fills if f.side == "buy"), D(0))
        earned = sum((f.price * f.amount - f.fee for f in fills if f.side == "sell"), D(0))
        assert balances["ETH"].total == D("0.05") + bought - sold
        assert balances["USDT"].total == D("100") - spent + earned
        assert all(f.fee == f.price * f.amount * FEE for f in fills)
        assert len({f.trade_id for f in fills}) == len(fills)


def _scan(engine: MatchingEngine, symbol: str, price: Decimal, through: bool) -> list[str]:
    """What a price update fills, by a scan of every open order (the reference)."""

    def crosses(side: str, limit: Decimal) -> bool:
        if through:
            return price < limit if side == "buy" else price > limit
        return price <= limit if side == "buy" else price >= limit

    crossed = [o for o in engine.open_orders(symbol) if crosses(o.side, o.price)]
    crossed.sort(key=lambda o: (-o.price if o.side == "buy" else o.price, int(o.exchange_order_id)))
    return [o.exchange_order_id for o in crossed]


@pytest.mark.parametrize("rule", ["touch", "through"])
def test_price_index_fills_what_a_scan_of_every_open_order_would(
    clock: FakeClock, rule: str
) -> None:
    import random

    rng = random.Random(17)
    engine = MatchingEngine(
        {ETH.symbol: ETH, BTC.symbol: BTC},
        {"USDT": D(10**9), "ETH": D(10**4), "BTC": D(10**3)},
        FEE,
        clock,
        fill_rule=rule,  # type: ignore[arg-type]
    )
    filled = 0
    for step in range(2500):
        symbol, tick = rng.choice([(ETH.symbol, D("0.01")), (BTC.symbol, D("0.1"))])
        # Whole prices in a narrow band: many orders share a price (time priority).
        price = D(rng.randint(95, 105)) * tick * 100
        action = rng.random()
        if step < 80 or action < 0.5:  # before a first price, buys rest above sells
            side: Side = rng.choice(["buy", "sell"])
            with contextlib.suppress(OrderRejected):
                engine.place(OrderRequest(symbol, side, price, D("0.5"), f"c{rng.randint(0, 60)}"))
        elif action < 0.6:
            with contextlib.suppress(OrderNotFound):
                engine.cancel(symbol, f"c{rng.randint(0, 60)}")
        elif action < 0.97:
            expected = _scan(engine, symbol, price, rule == "through")
            updates = engine.on_price(symbol, price)
            assert [u.order.exchange_order_id for u in updates] == expected, step
            filled += len(updates)
        else:
            restored = MatchingEngine(
                {ETH.symbol: ETH, BTC.symbol: BTC},
                {},
                FEE,
                clock,
                fill_rule=rule,  # type: ignore[arg-type]
            )
            restored.restore(json.loads(json.dumps(engine.snapshot())))
            engine = restored
    assert filled > 300
