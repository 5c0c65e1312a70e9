"""Level maths and market rounding."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantmesh.grid.levels import (
    amount_for_quote,
    holds_inventory,
    in_bounds,
    inventory_threshold,
    level_below,
    level_price,
    meets_minimums,
    round_amount,
    round_buy_price,
    round_sell_price,
)

from .support import D, make_rules, make_spec

GEO = make_spec(spacing="geometric", interval=D("0.01"))


class TestArithmetic:
    def test_level_price(self) -> None:
        spec = make_spec(anchor=D("2000"), interval=D("10"))
        assert level_price(spec, 0) == D("2000")
        assert level_price(spec, 3) == D("2030")
        assert level_price(spec, -2) == D("1980")

    def test_level_price_far_below_anchor_can_be_non_positive(self) -> None:
        spec = make_spec(anchor=D("20"), interval=D("10"))
        assert level_price(spec, -2) == 0
        assert level_price(spec, -3) == D("-10")

    @pytest.mark.parametrize(
        ("price", "expected"),
        [
            ("2000", -1),  # exactly on level 0: strictly below means level -1
            ("2000.01", 0),
            ("2010", 0),
            ("2010.000000001", 1),
            ("1999.99", -1),
            ("1990", -2),
            ("1500", -51),
        ],
    )
    def test_level_below(self, price: str, expected: int) -> None:
        spec = make_spec(anchor=D("2000"), interval=D("10"))
        assert level_below(spec, D(price)) == expected

    def test_level_below_with_inexact_division(self) -> None:
        spec = make_spec(anchor=D("1"), interval=D("0.0000003"))
        price = level_price(spec, 123456789)
        assert level_below(spec, price) == 123456788
        assert level_below(spec, price + D("1e-20")) == 123456789

    def test_zero_interval_is_refused(self) -> None:
        with pytest.raises(ValueError, match="interval must be positive"):
            level_below(make_spec(interval=D(0)), D("2000"))


class TestGeometric:
    def test_level_price(self) -> None:
        assert level_price(GEO, 0) == D("2000")
        assert level_price(GEO, 1) == D("2020")
        assert level_price(GEO, 2) == D("2040.2")
        # 2000 / 1.01, to 16 significant digits
        assert level_price(GEO, -1) == D("1980.198019801980")

    def test_level_price_ignores_the_callers_context(self) -> None:
        expected = level_price(GEO, -37)
        with localcontext() as ctx:
            ctx.prec = 5
            assert level_price(GEO, -37) == expected

    @pytest.mark.parametrize(
        ("price", "expected"),
        [("2000", -1), ("2000.0001", 0), ("2020", 0), ("2020.01", 1), ("1980.19801980198", -2)],
    )
    def test_level_below(self, price: str, expected: int) -> None:
        assert level_below(GEO, D(price)) == expected

    def test_level_below_far_from_the_anchor(self) -> None:
        for index in (-700, -1, 0, 1, 700):
            exact = level_price(GEO, index)
            assert level_below(GEO, exact) == index - 1
            assert level_below(GEO, exact * D("1.000001")) == index

    def test_non_positive_price_is_refused(self) -> None:
        with pytest.raises(ValueError, match="positive price"):
            level_below(GEO, D(0))

    def test_non_positive_anchor_is_refused(self) -> None:
        with pytest.raises(ValueError, match="positive anchor"):
            level_price(make_spec(spacing="geometric", interval=D("0.01"), anchor=D(0)), 1)


@settings(max_examples=200, deadline=None)
@given(
    geometric=st.booleans(),
    anchor=st.integers(1, 10**8).map(lambda n: D(n) / 1000),
    step=st.integers(1, 5000),
    ratio=st.integers(1, 10**6).map(lambda n: D(n) / 10**5),
)
def test_level_below_brackets_the_price(
    geometric: bool, anchor: Decimal, step: int, ratio: Decimal
) -> None:
    if geometric:
        spec = make_spec(spacing="geometric", anchor=anchor, interval=D(step) / 10**5)
    else:
        spec = make_spec(anchor=anchor, interval=anchor * step / 10**5)
    price = anchor * ratio
    index = level_below(spec, price)
    assert level_price(spec, index) < price <= level_price(spec, index + 1)


class TestRounding:
    def test_buy_price_rounds_down_and_sell_price_up(self) -> None:
        rules = make_rules(tick_size=D("0.01"))
        assert round_buy_price(D("1980.198"), rules) == D("1980.19")
        assert round_sell_price(D("1980.191"), rules) == D("1980.20")
        assert round_buy_price(D("1980.19"), rules) == D("1980.19")
        assert round_sell_price(D("1980.19"), rules) == D("1980.19")

    def test_results_carry_the_tick_exponent(self) -> None:
        rules = make_rules(tick_size=D("0.01"), lot_size=D("0.0001"))
        assert str(round_buy_price(D("2000"), rules)) == "2000.00"
        assert str(round_sell_price(D("2E+3"), rules)) == "2000.00"
        assert str(amount_for_quote(D("30"), D("2000"), rules)) == "0.0150"
        assert str(round_amount(D("0.015"), rules)) == "0.0150"

    def test_tick_that_is_not_a_power_of_ten(self) -> None:
        rules = make_rules(tick_size=D("0.5"))
        assert round_buy_price(D("10.74"), rules) == D("10.5")
        assert round_sell_price(D("10.26"), rules) == D("10.5")

    def test_amount_for_quote_floors_to_lot(self) -> None:
        rules = make_rules(lot_size=D("0.001"))
        assert amount_for_quote(D("30"), D("1990"), rules) == D("0.015")  # 0.015075...
        assert amount_for_quote(D("1"), D("1990"), rules) == 0

    @settings(max_examples=200, deadline=None)
    @given(
        quote=st.integers(1, 10**7).map(lambda n: D(n) / 100),
        price=st.integers(1, 10**12).map(lambda n: D(n) / 10**6),
        lot=st.sampled_from([D("1"), D("0.001"), D("0.00000001"), D("0.5")]),
    )
    def test_amount_for_quote_is_the_largest_lot_multiple_within_budget(
        self, quote: Decimal, price: Decimal, lot: Decimal
    ) -> None:
        amount = amount_for_quote(quote, price, make_rules(lot_size=lot))
        assert amount % lot == 0
        assert amount * price <= quote < (amount + lot) * price

    def test_amount_for_quote_refuses_non_positive_price(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            amount_for_quote(D("30"), D(0), make_rules())

    def test_round_amount(self) -> None:
        assert round_amount(D("0.01999"), make_rules(lot_size=D("0.001"))) == D("0.019")


class TestMinimums:
    rules = make_rules(min_amount=D("0.001"), min_notional=D("5"))

    @pytest.mark.parametrize(
        ("price", "amount", "min_order_value", "ok"),
        [
            ("2000", "0.0025", "0", True),  # 5.00 notional: the minimum is inclusive
            ("2000", "0.0024", "0", False),  # 4.80 < 5
            ("10000", "0.0009", "0", False),  # below min_amount
            ("2000", "0", "0", False),
            ("2000", "0.005", "10", True),
            ("2000", "0.0049", "10", False),  # our own min_order_value is higher
        ],
    )
    def test_meets_minimums(self, price: str, amount: str, min_order_value: str, ok: bool) -> None:
        assert meets_minimums(D(price), D(amount), self.rules, D(min_order_value)) is ok

    def test_zero_amount_fails_even_without_minimums(self) -> None:
        rules = make_rules(min_amount=D(0), min_notional=D(0))
        assert not meets_minimums(D("2000"), D(0), rules, D(0))


class TestInventory:
    def test_threshold_is_the_lot_when_min_amount_is_smaller(self) -> None:
        rules = make_rules(lot_size=D("0.01"), min_amount=D("0.001"))
        assert inventory_threshold(rules) == D("0.01")
        assert holds_inventory(D("0.01"), rules)
        assert not holds_inventory(D("0.0099"), rules)

    def test_threshold_is_min_amount_rounded_up_to_the_lot(self) -> None:
        rules = make_rules(lot_size=D("0.1"), min_amount=D("1.02"))
        assert inventory_threshold(rules) == D("1.1")
        assert not holds_inventory(D("1.09"), rules)  # floors to 1.0 < 1.02
        assert holds_inventory(D("1.1"), rules)

    def test_zero_min_amount(self) -> None:
        rules = make_rules(lot_size=D("0.001"), min_amount=D(0))
        assert not holds_inventory(D(0), rules)
        assert holds_inventory(D("0.001"), rules)


class TestBounds:
    def test_bounds_are_inclusive_and_optional(self) -> None:
        spec = make_spec(lower_price=D("1900"), upper_price=D("2100"))
        assert in_bounds(spec, D("1900"))
        assert in_bounds(spec, D("2100"))
        assert not in_bounds(spec, D("1899.99"))
        assert not in_bounds(spec, D("2100.01"))
        assert in_bounds(make_spec(), D("1"))
        assert in_bounds(make_spec(lower_price=D("1900")), D("1e9"))
