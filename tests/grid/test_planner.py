"""Planner scenarios on a small grid: anchor 2000, steps of 10, 30 USDT, windows of 3."""

from __future__ import annotations

import pytest

from quantmesh.grid.planner import CancelOrder, OpenOrder, PlaceOrder, Plan, Skipped, plan
from quantmesh.grid.state import LevelState

from .support import D, apply, as_open, held, make_rules, make_spec, make_state

RULES = make_rules()


def buy(level: int, price: str, amount: str = "0.015", coid: str | None = None) -> OpenOrder:
    return OpenOrder(coid or f"b{level}", level, "buy", D(price), D(amount))


def sell(level: int, price: str, amount: str = "0.015", coid: str | None = None) -> OpenOrder:
    return OpenOrder(coid or f"s{level}", level, "sell", D(price), D(amount))


def places_of(result: Plan, side: str) -> list[tuple[int, str, str]]:
    return [(p.level, str(p.price), str(p.amount)) for p in result.places if p.side == side]


class TestFreshGrid:
    def test_places_buy_window_buys_below_the_price_nearest_first(self) -> None:
        result = plan(make_spec(), RULES, make_state(), D("2005"), [])
        assert result.places == (
            PlaceOrder(0, "buy", D("2000.00"), D("0.0150")),
            PlaceOrder(-1, "buy", D("1990.00"), D("0.0150")),  # 30 / 1990 = 0.015075...
            PlaceOrder(-2, "buy", D("1980.00"), D("0.0151")),
        )
        assert result.cancels == ()
        assert result.skipped == ()

    def test_no_buy_at_the_price(self) -> None:
        result = plan(make_spec(), RULES, make_state(), D("2000"), [])
        assert [p.level for p in result.places] == [-1, -2, -3]
        assert all(p.price < D("2000") for p in result.places)

    def test_buy_price_rounded_down_to_tick(self) -> None:
        spec = make_spec(anchor=D("2000.005"))
        result = plan(spec, RULES, make_state(anchor=spec.anchor), D("2001"), [])
        assert result.places[0] == PlaceOrder(0, "buy", D("2000.00"), D("0.0150"))

    def test_geometric_grid(self) -> None:
        spec = make_spec(spacing="geometric", interval=D("0.01"), buy_window=2)
        result = plan(spec, RULES, make_state(), D("2019"), [])
        # levels 2000 and 2000 / 1.01 = 1980.19801980..., rounded down to the tick
        assert places_of(result, "buy") == [(0, "2000.00", "0.0150"), (-1, "1980.19", "0.0151")]

    @pytest.mark.parametrize("price", ["0", "-1", "NaN", "Infinity"])
    def test_refuses_a_bad_price(self, price: str) -> None:
        with pytest.raises(ValueError, match="price must be positive"):
            plan(make_spec(), RULES, make_state(), D(price), [])


class TestSells:
    def test_inventory_is_sold_one_level_up_from_its_own_level(self) -> None:
        state = make_state([held(0, "0.01537")])
        result = plan(make_spec(), RULES, state, D("2005"), [])
        assert places_of(result, "sell") == [(0, "2010.00", "0.0153")]  # floored to the lot
        assert 0 not in [p.level for p in result.places if p.side == "buy"]
        assert places_of(result, "buy") == [(-1, "1990.00", "0.0150"), (-2, "1980.00", "0.0151")]

    def test_sell_price_rounded_up_to_tick(self) -> None:
        spec = make_spec(spacing="geometric", interval=D("0.01"), buy_window=0)
        state = make_state([held(-2)])
        result = plan(spec, RULES, state, D("2005"), [])
        assert places_of(result, "sell") == [(-2, "1980.20", "0.0150")]  # 1980.1980...

    def test_sell_below_the_price_is_placed_anyway(self) -> None:
        state = make_state([held(-5)])
        result = plan(make_spec(), RULES, state, D("2005"), [])
        assert places_of(result, "sell") == [(-5, "1960.00", "0.0150")]

    def test_only_the_nearest_sell_window_sells(self) -> None:
        state = make_state([held(i) for i in range(1, 7)])
        result = plan(make_spec(sell_window=2, buy_window=0), RULES, state, D("2005"), [])
        assert [p.level for p in result.places] == [1, 2]

    def test_existing_open_sells_count_toward_the_window(self) -> None:
        state = make_state([held(i) for i in range(1, 7)])
        result = plan(
            make_spec(sell_window=3, buy_window=0), RULES, state, D("2005"), [sell(2, "2030")]
        )
        assert [p.level for p in result.places] == [1, 3]

    def test_dust_is_not_sold_and_does_not_block_a_buy(self) -> None:
        rules = make_rules(lot_size=D("0.001"), min_amount=D("0.001"))
        state = make_state([held(0, "0.0009")])
        result = plan(make_spec(), rules, state, D("2005"), [])
        assert places_of(result, "sell") == []
        assert [p.level for p in result.places] == [0, -1, -2]

    def test_partly_filled_open_buy_gets_no_sell_yet(self) -> None:
        state = make_state([held(0, "0.01")])
        result = plan(make_spec(), RULES, state, D("1999"), [buy(0, "2000")])
        assert places_of(result, "sell") == []
        assert result.cancels == ()

    def test_sell_below_minimum_is_skipped(self) -> None:
        state = make_state([held(1, "0.002")])  # 0.002 * 2020 = 4.04 < 5
        result = plan(make_spec(buy_window=0), RULES, state, D("2005"), [])
        assert result.places == ()
        assert result.skipped == (Skipped(1, "sell", "min_notional"),)

    def test_skipped_sell_takes_no_window_slot(self) -> None:
        state = make_state([held(1, "0.002"), held(2), held(3)])
        result = plan(make_spec(buy_window=0, sell_window=2), RULES, state, D("2005"), [])
        assert [p.level for p in result.places] == [2, 3]

    def test_open_sell_without_inventory_is_left_alone(self) -> None:
        result = plan(make_spec(), RULES, make_state(), D("2005"), [sell(5, "2060")])
        assert result.cancels == ()
        assert 5 not in [p.level for p in result.places]


class TestNoDuplicates:
    def test_level_with_an_open_order_of_either_side_gets_nothing(self) -> None:
        state = make_state([held(-1)])
        opened = [sell(0, "2010"), buy(-1, "1990")]
        result = plan(make_spec(), RULES, state, D("2005"), opened)
        assert [(p.level, p.side) for p in result.places] == [(-2, "buy")]

    def test_replanning_after_placing_places_nothing(self) -> None:
        state = make_state([held(2), held(3)])
        first = plan(make_spec(), RULES, state, D("2005"), [])
        assert len(first.places) == 5
        second = plan(make_spec(), RULES, state, D("2005"), as_open(first))
        assert second == Plan((), (), ())


class TestHysteresis:
    def test_buy_inside_the_band_is_kept_and_outside_cancelled(self) -> None:
        # window of 3 below b0 = 0 is levels 0, -1, -2; with hysteresis 2 the band keeps
        # -3 and -4; -5 is cancelled.
        opened = [buy(i, str(2000 + 10 * i)) for i in (-3, -4, -5)]
        result = plan(make_spec(), RULES, make_state(), D("2005"), opened)
        assert result.cancels == (CancelOrder("b-5", -5, "buy", "outside_window"),)
        assert [p.level for p in result.places] == [0, -1, -2]

    def test_zero_hysteresis_cancels_right_outside_the_window(self) -> None:
        opened = [buy(-3, "1970")]
        result = plan(make_spec(cancel_hysteresis=0), RULES, make_state(), D("2005"), opened)
        assert result.cancels == (CancelOrder("b-3", -3, "buy", "outside_window"),)

    def test_buy_at_or_above_the_price_is_left_alone(self) -> None:
        opened = [buy(0, "2000"), buy(30, "2300")]
        result = plan(make_spec(), RULES, make_state(), D("1995"), opened)
        assert result.cancels == ()

    def test_price_oscillating_by_one_level_does_not_churn(self) -> None:
        spec, state = make_spec(), make_state()
        opened: list[OpenOrder] = []
        total_places = 0
        for step in range(10):
            price = D("2005") if step % 2 == 0 else D("2015")
            result = plan(spec, RULES, state, price, opened)
            assert result.cancels == ()
            total_places += len(result.places)
            opened = apply(result, opened)
        assert total_places == 4  # three buys, then one more when the price first rose

    def test_sells_beyond_the_band_are_cancelled(self) -> None:
        state = make_state([held(i) for i in range(1, 9)])
        opened = [sell(i, str(2010 + 10 * i)) for i in range(1, 9)]
        spec = make_spec(sell_window=3, cancel_hysteresis=2, buy_window=0)
        result = plan(spec, RULES, state, D("2005"), opened)
        # ranks 0..4 are the window plus the band: levels 1..5 stay, 6..8 go
        assert [c.level for c in result.cancels] == [6, 7, 8]
        assert {c.reason for c in result.cancels} == {"outside_window"}
        assert result.places == ()

    def test_sell_inside_the_band_is_neither_cancelled_nor_placed(self) -> None:
        state = make_state([held(i) for i in range(1, 6)])
        opened = [sell(i, str(2010 + 10 * i)) for i in (2, 3, 5)]
        spec = make_spec(sell_window=3, cancel_hysteresis=2, buy_window=0)
        result = plan(spec, RULES, state, D("2005"), opened)
        # rank 0: level 1 (placed), 1: level 2, 2: level 3, 3: level 5 (kept, in the band);
        # level 4 has rank 3 without a sell: not placed
        assert [p.level for p in result.places] == [1]
        assert result.cancels == ()


class TestBounds:
    def test_levels_below_lower_price_are_skipped(self) -> None:
        spec = make_spec(lower_price=D("1990"))
        result = plan(spec, RULES, make_state(), D("2005"), [])
        assert [p.level for p in result.places] == [0, -1]
        assert result.skipped == (Skipped(-2, "buy", "out_of_range"),)

    def test_levels_above_upper_price_are_skipped(self) -> None:
        spec = make_spec(upper_price=D("1995"))
        result = plan(spec, RULES, make_state(), D("2005"), [])
        assert [p.level for p in result.places] == [-1, -2]
        assert result.skipped == (Skipped(0, "buy", "out_of_range"),)

    def test_non_positive_levels_are_out_of_range(self) -> None:
        spec = make_spec(anchor=D("20"), interval=D("10"), order_quantity=D("10"))
        result = plan(spec, make_rules(min_notional=D(1)), make_state(anchor=D("20")), D("25"), [])
        assert [p.level for p in result.places] == [0, -1]
        assert result.skipped == (Skipped(-2, "buy", "out_of_range"),)

    def test_open_buy_out_of_bounds_is_cancelled(self) -> None:
        spec = make_spec(lower_price=D("1990"))
        result = plan(spec, RULES, make_state(), D("2005"), [buy(-2, "1980")])
        assert result.cancels == (CancelOrder("b-2", -2, "buy", "out_of_range"),)

    def test_sells_ignore_bounds(self) -> None:
        spec = make_spec(upper_price=D("1995"), buy_window=0)
        result = plan(spec, RULES, make_state([held(3)]), D("2005"), [])
        assert places_of(result, "sell") == [(3, "2040.00", "0.0150")]


class TestPositionCap:
    def test_cap_limits_the_number_of_buys(self) -> None:
        spec = make_spec(max_position=D("60"))
        result = plan(spec, RULES, make_state(), D("2005"), [])
        assert [p.level for p in result.places] == [0, -1]  # 30.00 + 29.85
        assert result.skipped == (Skipped(-2, "buy", "position_cap"),)

    def test_inventory_and_open_buys_count(self) -> None:
        spec = make_spec(max_position=D("90"), buy_window=4)
        state = make_state([held(-1, "0.015")])  # 1990 * 0.015 = 29.85
        opened = [buy(-3, "1970", "0.0152")]  # 29.944
        result = plan(spec, RULES, state, D("2005"), opened)
        assert [p.level for p in result.places if p.side == "buy"] == [0]  # 29.85+29.944+30
        assert result.skipped == (Skipped(-2, "buy", "position_cap"),)

    def test_nothing_placed_when_already_over_the_cap(self) -> None:
        spec = make_spec(max_position=D("10"), buy_window=2)
        result = plan(spec, RULES, make_state([held(5)]), D("2005"), [])
        assert [p.side for p in result.places] == ["sell"]
        assert {s.reason for s in result.skipped} == {"position_cap"}


class TestMinimums:
    def test_order_quantity_below_min_notional_is_skipped(self) -> None:
        spec = make_spec(order_quantity=D("4"))
        result = plan(spec, RULES, make_state(), D("2005"), [])
        assert result.places == ()
        assert [s.reason for s in result.skipped] == ["min_notional"] * 3

    def test_min_order_value_applies_too(self) -> None:
        spec = make_spec(min_order_value=D("30"))
        result = plan(spec, RULES, make_state(), D("2005"), [])
        # only 2000 * 0.015 = 30 reaches 30; 1990 * 0.0150 and 1980 * 0.0151 fall short
        assert [p.level for p in result.places] == [0]
        assert [s.level for s in result.skipped] == [-1, -2]

    def test_lot_rounding_to_zero_is_skipped(self) -> None:
        rules = make_rules(lot_size=D("1"), min_amount=D("1"))
        result = plan(make_spec(), rules, make_state(), D("2005"), [])
        assert result.places == ()
        assert {s.reason for s in result.skipped} == {"min_notional"}


class TestOrdering:
    def test_cancels_then_places_each_nearest_first(self) -> None:
        state = make_state([held(1), held(-6)])
        opened = [buy(-8, "1920"), buy(-9, "1910"), buy(-10, "1900")]
        result = plan(make_spec(), RULES, state, D("2008"), opened)
        assert [c.level for c in result.cancels] == [-8, -9, -10]
        distances = [abs(p.price - D("2008")) for p in result.places]
        assert distances == sorted(distances)
        assert [(p.level, p.side) for p in result.places] == [
            (0, "buy"),  # 8 away
            (1, "sell"),  # 12 away
            (-1, "buy"),
            (-2, "buy"),
            (-6, "sell"),  # 1950, 58 away
        ]

    def test_same_input_same_plan(self) -> None:
        state = make_state([held(i) for i in (3, -4, 7, 1)])
        opened = [buy(-1, "1990"), sell(7, "2080"), buy(-9, "1910")]
        results = {plan(make_spec(), RULES, state, D("2005"), list(opened)) for _ in range(3)}
        results.add(plan(make_spec(), RULES, state, D("2005"), reversed(opened)))
        assert len(results) == 1


def test_state_levels_are_not_modified() -> None:
    state = make_state([held(1)])
    before = dict(state.levels)
    plan(make_spec(), RULES, state, D("2005"), [])
    assert state.levels == before
    assert state.level(1) == LevelState(1, D("0.015"), D("30"), 1)


def test_geometric_levels_closer_than_a_tick_are_not_traded() -> None:
    # 0.2 % steps from 0.05 with a 0.0001 tick: near 0.04 two levels round to one price
    spec = make_spec(
        anchor=D("0.05"), interval=D("0.002"), spacing="geometric", order_quantity=D("30"),
        buy_window=20, min_order_value=D("0"),
    )  # fmt: skip
    rules = make_rules(tick_size=D("0.0001"), lot_size=D("1"), min_amount=D("1"))
    result = plan(spec, rules, make_state(anchor=D("0.05")), D("0.04"), [])
    prices = [p.price for p in result.places]
    assert prices, "nothing placed: the test would prove nothing"
    assert len(prices) == len(set(prices)), "two levels share a price"
    assert any(s.reason == "below_tick" for s in result.skipped)
