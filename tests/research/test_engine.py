"""The backtest engine: hand-worked grids, the path models, and its shortcuts checked
against planning at every tick."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quantmesh.exchange.sim.matching import FillRule
from quantmesh.research.candles import Candles
from quantmesh.research.engine import RunRecord, SymbolSetup, _Run, run_symbol
from quantmesh.research.errors import ResearchError
from quantmesh.research.path import high_first
from quantmesh.research.synthetic import random_walk_candles
from tests.research.support import FEE, candles, setup

pytestmark = pytest.mark.timeout(60)


def _outcome(record: RunRecord) -> tuple[object, ...]:
    orders = [
        (o.client_order_id, o.side, o.price, o.amount, o.status, o.filled) for o in record.orders
    ]
    fills = sorted((f.client_order_id, f.price, f.amount, f.fee) for f in record.fills)
    trips = [
        (t.level, t.cycle, t.amount, t.buy_cost, t.sell_proceeds, t.pnl) for t in record.round_trips
    ]
    return sorted(orders), fills, trips, record.realized, record.inventory


def test_one_round_trip_worked_by_hand() -> None:
    # Anchor 100, step 10: buys at 90, 80, 70. The price dips to 89 and comes back to 101.
    record = run_symbol(setup(), candles((100, 100, 89, 95), (95, 101, 95, 101)), 60_000)
    amount = Decimal("1.111")  # 100 USDT at 90, floored to the 0.001 lot
    buy_cost = Decimal(90) * amount * (1 + FEE)
    proceeds = Decimal(100) * amount * (1 - FEE)
    assert [(t.level, t.cycle, t.amount) for t in record.round_trips] == [(-1, 1, amount)]
    assert record.round_trips[0].pnl == proceeds - buy_cost
    assert record.realized == proceeds - buy_cost
    assert record.inventory == 0
    ids = {o.client_order_id for o in record.orders}
    assert f"qm.{record.tag}.B-1.0" in ids and f"qm.{record.tag}.S-1.1" in ids
    # At 101 the window is levels 0, -1, -2 (100, 90, 80); the buys placed at the dip on
    # levels -3 and -4 (70, 60) stay within the hysteresis of 2 levels.
    open_buys = sorted(o.price for o in record.orders if o.status == "open" and o.side == "buy")
    assert open_buys == [Decimal(p) for p in ("60.00", "70.00", "80.00", "90.00", "100.00")]


def test_fills_respect_lot_minimums_and_fee() -> None:
    # 4 USDT a level is below the market's 5 USDT minimum notional: nothing is placed.
    small = run_symbol(setup(order_quantity=Decimal(4)), candles((100, 100, 50, 60)), 60_000)
    assert small.orders == []
    assert small.skipped["min_notional"] > 0
    record = run_symbol(setup(), candles((100, 100, 75, 75)), 60_000)
    for fill in record.fills:
        assert fill.amount % Decimal("0.001") == 0 and fill.price % Decimal("0.01") == 0
        assert fill.price * fill.amount >= 5
        assert fill.fee == fill.price * fill.amount * FEE
    assert sorted(f.price for f in record.fills) == [Decimal("80.00"), Decimal("90.00")]


def test_path_models_order_the_extremes() -> None:
    # Opens at 91 near its low: 'nearer' goes down first (buy at 90) then up (sell at 100);
    # 'pessimistic' goes up first, so the buy at 90 is not sold in the same candle.
    data = candles((100, 100, 100, 91), (91, 101, 89, 91))
    nearer = run_symbol(setup(), data, 60_000, "nearer")
    pessimistic = run_symbol(setup(), data, 60_000, "pessimistic")
    assert len(nearer.round_trips) == 1
    assert pessimistic.round_trips == []
    assert pessimistic.inventory == Decimal("1.000") + Decimal("1.111")
    assert high_first("nearer", 100, 101, 90) and not high_first("nearer", 91, 101, 89)
    assert high_first("pessimistic", 91, 101, 89)


def test_position_cap_holds_buys_back_and_is_timed() -> None:
    capped = run_symbol(
        setup(max_position=Decimal(200)), candles((100, 100, 60, 60), (60, 61, 59, 60)), 60_000
    )
    buys = [f for f in capped.fills if f.side == "buy"]
    assert len(buys) == 2  # 90 and 80; 70 would lift the position above 200 USDT
    assert capped.skipped["position_cap"] > 0
    assert capped.capped_candles == 2


def test_grid_step_finer_than_the_tick_is_refused() -> None:
    with pytest.raises(ResearchError, match="finer than the market's price tick"):
        run_symbol(setup(interval=Decimal("0.001")), candles((100, 100, 99, 99)), 60_000)


def test_no_candles_is_an_error() -> None:
    with pytest.raises(ResearchError, match="no candles"):
        run_symbol(setup(), candles(), 60_000)


def test_remembered_quiet_plans_change_nothing() -> None:
    data = random_walk_candles(3000, price=100.0, volatility=0.004, seed=11)
    grids: list[dict[str, object]] = [
        {"interval": Decimal(1)},
        {"interval": Decimal(1), "max_position": Decimal(300)},
        {"interval": Decimal("0.37"), "buy_window": 6, "sell_window": 2},
        {"interval": Decimal(1), "cancel_hysteresis": 1, "max_position": Decimal(450)},
        {
            "interval": Decimal("0.5"),
            "cancel_hysteresis": 0,
            "lower_price": Decimal(95),
            "upper_price": Decimal(104),
        },
    ]
    for changes in grids:
        fast = run_symbol(setup(**changes), data, 60_000)
        slow = run_symbol(setup(**changes), data, 60_000, remember_quiet=False)
        assert _outcome(fast) == _outcome(slow)
        assert fast.skipped == slow.skipped
        assert len(fast.round_trips) > 5


def _tick_by_tick(data_setup: SymbolSetup, data: Candles, fill: FillRule = "touch") -> _Run:
    """The reference: an event at every tick along the path, no shortcut."""
    assert data_setup.rules.tick_size == Decimal("0.01")
    run = _Run(data_setup, Decimal(100), trace=False, remember_quiet=False, fill=fill)
    price = round(data.open[0] * 100)
    run.event(price, 0.0)
    for i in range(len(data)):
        o, h, low, c = (round(col[i] * 100) for col in (data.open, data.high, data.low, data.close))
        up_first = high_first("nearer", data.open[i], data.high[i], data.low[i])
        for target in (o, h, low, c) if up_first else (o, low, h, c):
            step = 1 if target > price else -1
            while price != target:
                price += step
                run.event(price, 0.0)
    return run


@pytest.mark.parametrize("fill", ["touch", "through"])
def test_events_only_at_thresholds_match_every_tick(fill: FillRule) -> None:
    data = random_walk_candles(120, price=100.0, volatility=0.01, seed=5)
    shortcut = run_symbol(setup(interval=Decimal("1.5")), data, 60_000, fill=fill)
    reference = _tick_by_tick(setup(interval=Decimal("1.5")), data, fill)
    ref_orders = sorted(
        (o.client_order_id, o.side, o.price, o.amount, o.status)
        for o in reference.engine.all_orders()
    )
    got = sorted((o.client_order_id, o.side, o.price, o.amount, o.status) for o in shortcut.orders)
    assert got == ref_orders
    assert [t.pnl for t in shortcut.round_trips] == [t.pnl for t in reference.round_trips]
    assert len(shortcut.round_trips) > 3


def test_quiet_plans_are_kept_per_book_as_the_planner_reads_it() -> None:
    # The memo's picture of the book is the book: each open order's level, side, price and
    # amount, and each positive holding; a change of either is another book.
    data = random_walk_candles(1500, price=100.0, volatility=0.004, seed=3)
    run = _Run(setup(interval=Decimal(1), max_position=Decimal(400)), Decimal(100), trace=False)
    run.event(10_000, 0.0)
    for i in range(len(data)):
        run.walk(round(data.open[i] * 100), round(data.low[i] * 100), 0.0)
        run.walk(round(data.low[i] * 100), round(data.close[i] * 100), 0.0)
    assert len(run.round_trips) > 5
    open_orders = {
        o.client_order_id: run._intern((o.level, o.side, o.price, o.amount))
        for o in run.book.open_orders()
    }
    held = {
        lv.index: run._intern((lv.index, lv.holding))
        for lv in run.book.state.levels.values()
        if lv.holding > 0
    }
    assert run._open_keys == open_orders and run._held_keys == held and held
    assert run._cid_by_key == {key: cid for cid, key in open_orders.items()}
    plans = run._memo_of_book()
    assert run._memo_of_book() is plans
    index = next(iter(held))
    run._set_holding(index, run._intern((index, Decimal("0.5"))))
    assert run._memo_of_book() is not plans
    run._set_holding(index, held[index])
    assert run._memo_of_book() is plans
    cid, key = next(iter(open_orders.items()))
    other = run._intern(("another order",))
    run._set_order(cid, other)
    changed = run._memo_of_book()
    assert changed is not plans
    run._set_order(cid, key)
    assert run._memo_of_book() is plans
    # Two open orders alike: another book. While they are, and until the one left of them
    # closes, the planner's answers at a price are not used: a remembered cancel could not
    # say which order it meant.
    assert len(run._cid_by_key) == len(run._open_keys)
    run._set_order("qm.twin", key)
    assert run._memo_of_book() is not plans
    run._set_order("qm.twin", None)
    assert run._memo_of_book() is plans
    assert key not in run._cid_by_key and len(run._cid_by_key) < len(run._open_keys)
