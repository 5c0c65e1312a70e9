"""Planner invariants over random specs, rules, states, prices and open orders."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quantmesh.domain import MarketRules, Side
from quantmesh.grid.levels import (
    holds_inventory,
    level_below,
    level_price,
    round_buy_price,
    round_sell_price,
)
from quantmesh.grid.planner import OpenOrder, Plan, plan
from quantmesh.grid.state import GridSpec, GridState, LevelState, Spacing

from .support import D, apply, as_open

PROPERTIES = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Scenario:
    spec: GridSpec
    rules: MarketRules
    state: GridState
    price: Decimal
    open_orders: tuple[OpenOrder, ...]

    def plan(self, open_orders: tuple[OpenOrder, ...] | list[OpenOrder] | None = None) -> Plan:
        orders = self.open_orders if open_orders is None else open_orders
        return plan(self.spec, self.rules, self.state, self.price, orders)


def _optional(draw: st.DrawFn, value: Decimal) -> Decimal | None:
    return value if draw(st.booleans()) else None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    tick = draw(st.sampled_from([D("0.01"), D("0.1"), D("1"), D("0.5"), D("0.00001")]))
    lot = draw(st.sampled_from([D("0.0001"), D("0.001"), D("0.1"), D("1")]))
    anchor = tick * draw(st.integers(50, 100_000))
    unit = anchor * lot  # quote value of one lot near the anchor
    rules = MarketRules(
        symbol="X/Y",
        base="X",
        quote="Y",
        tick_size=tick,
        lot_size=lot,
        min_amount=draw(st.sampled_from([D(0), lot, lot * 3, lot * D("2.5")])),
        min_notional=unit * draw(st.sampled_from([0, 1, 2])),
    )
    spacing: Spacing
    if draw(st.booleans()):
        spacing, interval = "geometric", D(draw(st.integers(1, 500))) / 10_000
    else:
        spacing, interval = "arithmetic", anchor * draw(st.integers(1, 500)) / 10_000
    spec = GridSpec(
        symbol="X/Y",
        anchor=anchor,
        interval=interval,
        order_quantity=unit * draw(st.integers(0, 40)) / 4,
        buy_window=draw(st.integers(0, 6)),
        sell_window=draw(st.integers(0, 6)),
        spacing=spacing,
        min_order_value=unit * draw(st.sampled_from([0, 1, 3])),
        lower_price=_optional(draw, anchor * draw(st.integers(50, 100)) / 100),
        upper_price=_optional(draw, anchor * draw(st.integers(100, 150)) / 100),
        max_position=_optional(draw, unit * draw(st.integers(0, 400)) / 10),
        cancel_hysteresis=draw(st.integers(0, 3)),
    )
    price = anchor * (1 + D(draw(st.integers(-300, 300))) / 1000)
    base = level_below(spec, price)
    nearby = st.integers(base - 12, base + 12)

    state = GridState(symbol="X/Y", anchor=anchor)
    for index in draw(st.sets(nearby, max_size=10)):
        lots = D(draw(st.sampled_from(["0", "0.3", "1", "2", "3", "5", "8"])))
        state.set_level(LevelState(index, lot * lots, unit * lots, draw(st.integers(0, 3))))

    orders: list[OpenOrder] = []
    for index in draw(st.sets(nearby, max_size=12)):
        side: Side = draw(st.sampled_from(["buy", "sell"]))
        if side == "buy":
            order_price = max(round_buy_price(level_price(spec, index), rules), tick)
        else:
            order_price = round_sell_price(level_price(spec, index + 1), rules)
        amount = lot * draw(st.integers(1, 6))
        orders.append(OpenOrder(f"o{index}", index, side, order_price, amount))
    return Scenario(spec, rules, state, price, tuple(orders))


def _exposure(s: Scenario, buys: list[tuple[Decimal, Decimal]]) -> Decimal:
    inventory = sum(
        (level_price(s.spec, lv.index) * lv.holding for lv in s.state.levels.values()),
        D(0),
    )
    opened = sum((o.price * o.amount for o in s.open_orders if o.side == "buy"), D(0))
    return inventory + opened + sum((p * a for p, a in buys), D(0))


@PROPERTIES
@given(scenarios())
def test_placed_orders_are_valid(s: Scenario) -> None:
    result = s.plan()
    rules, spec = s.rules, s.spec
    busy = {o.level for o in s.open_orders}
    placed_levels = [p.level for p in result.places]
    assert len(placed_levels) == len(set(placed_levels)), "two orders on one level"
    assert not busy & set(placed_levels), "order on a level that already has one"
    floor_value = max(rules.min_notional, spec.min_order_value)
    for p in result.places:
        assert p.price % rules.tick_size == 0
        assert p.amount % rules.lot_size == 0
        assert p.amount > 0
        assert p.amount >= rules.min_amount
        assert p.price * p.amount >= floor_value
        holding = s.state.level(p.level).holding
        if p.side == "buy":
            assert p.price < s.price, "buy at or above the price"
            assert p.price == round_buy_price(level_price(spec, p.level), rules)
            assert not holds_inventory(holding, rules)
            assert p.price * p.amount <= spec.order_quantity
        else:
            assert holds_inventory(holding, rules), "sell on a level without inventory"
            assert p.amount <= holding
            assert p.price == round_sell_price(level_price(spec, p.level + 1), rules)


@PROPERTIES
@given(scenarios())
def test_buys_stay_in_window_bounds_and_cap(s: Scenario) -> None:
    result = s.plan()
    spec = s.spec
    base = level_below(spec, s.price)
    buys = [p for p in result.places if p.side == "buy"]
    for p in buys:
        assert base - spec.buy_window < p.level <= base
        level = level_price(spec, p.level)
        assert spec.lower_price is None or level >= spec.lower_price
        assert spec.upper_price is None or level <= spec.upper_price
    if spec.max_position is not None and buys:
        assert _exposure(s, [(p.price, p.amount) for p in buys]) <= spec.max_position
    for p in result.places:
        if p.side == "sell":
            assert _sell_rank(s, result, p.level) < spec.sell_window


def _sell_rank(s: Scenario, result: Plan, level: int) -> int:
    """Sells below ``level`` that take a window slot: open ones on inventory, and placed ones."""
    opened = sum(
        1
        for o in s.open_orders
        if o.side == "sell"
        and o.level < level
        and holds_inventory(s.state.level(o.level).holding, s.rules)
    )
    return opened + sum(1 for p in result.places if p.side == "sell" and p.level < level)


@PROPERTIES
@given(scenarios())
def test_cancels_respect_the_hysteresis_band(s: Scenario) -> None:
    result = s.plan()
    spec = s.spec
    base = level_below(spec, s.price)
    by_id = {o.client_order_id: o for o in s.open_orders}
    assert len({c.client_order_id for c in result.cancels}) == len(result.cancels)
    for c in result.cancels:
        order = by_id[c.client_order_id]
        assert (order.level, order.side) == (c.level, c.side)
        if c.side == "buy":
            assert c.level <= base, "cancelled a buy at or above the price"
            if c.reason == "outside_window":
                assert base - c.level >= spec.buy_window + spec.cancel_hysteresis
        else:
            assert holds_inventory(s.state.level(c.level).holding, s.rules)
            assert _sell_rank(s, result, c.level) >= spec.sell_window + spec.cancel_hysteresis


@PROPERTIES
@given(scenarios())
def test_replanning_after_applying_places_nothing(s: Scenario) -> None:
    # Grids as the daemon runs them: a window of at least one level, and levels at least a
    # tick apart (finer levels collapse onto one price, and the daemon refuses them).
    step = s.spec.interval if s.spec.spacing == "arithmetic" else s.spec.anchor * s.spec.interval
    assume(s.spec.buy_window >= 1 and step >= 2 * s.rules.tick_size)
    first = s.plan()
    # the places went through, the cancels are still pending
    pending = s.plan([*s.open_orders, *as_open(first)])
    assert pending.places == ()
    assert pending.cancels == first.cancels
    # the cancels went through as well: nothing new but the sell of a level whose (partly
    # filled) buy was cancelled; with a cap, a cancelled buy may also free room for a buy
    if s.spec.max_position is None:
        settled = s.plan(apply(first, s.open_orders))
        freed = {c.level for c in first.cancels if c.side == "buy"}
        assert all(p.side == "sell" and p.level in freed for p in settled.places)
        # a freed level holding inventory ranks among the sells and may push one past the
        # band; with none freed, nothing changes
        if not freed:
            assert settled.cancels == ()
