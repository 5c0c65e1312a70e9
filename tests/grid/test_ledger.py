"""Per-level accounting: buys, sells in parts, one round trip per cycle."""

from __future__ import annotations

from decimal import localcontext

import pytest

from quantmesh.grid.ledger import (
    FillOutcome,
    SellProgress,
    apply_buy_fill,
    apply_sell_fill,
    close_buy,
    close_sell,
)
from quantmesh.grid.planner import plan
from quantmesh.grid.state import LevelState, RoundTrip

from .support import D, as_open, make_rules, make_spec, make_state

RULES = make_rules()
BOUGHT = LevelState(0, D("0.015"), D("30.03"), 1)


class TestBuy:
    def test_fee_in_quote_adds_to_cost(self) -> None:
        level = apply_buy_fill(LevelState(0), D("0.015"), D("2000"), D("0.03"), "USDT", RULES)
        assert level == LevelState(0, D("0.015"), D("30.03"), 0)

    def test_fee_in_base_reduces_holding(self) -> None:
        level = apply_buy_fill(LevelState(0), D("0.015"), D("2000"), D("0.000015"), "ETH", RULES)
        assert level == LevelState(0, D("0.014985"), D("30"), 0)

    def test_fee_in_a_third_currency_is_not_cost(self) -> None:
        level = apply_buy_fill(LevelState(0), D("0.015"), D("2000"), D("0.0001"), "BNB", RULES)
        assert level == LevelState(0, D("0.015"), D("30"), 0)

    def test_partial_fills_add_up(self) -> None:
        level = LevelState(-3, cycle=4)
        for amount in ("0.005", "0.004", "0.006"):
            level = apply_buy_fill(level, D(amount), D("1970"), D("0.01"), "USDT", RULES)
        assert level == LevelState(-3, D("0.015"), D("29.58"), 4)  # 29.55 + 3 fees

    def test_exact_whatever_the_callers_context(self) -> None:
        with localcontext() as ctx:
            ctx.prec = 3
            level = apply_buy_fill(
                LevelState(0), D("0.0151"), D("1987.65"), D("0.03001"), "USDT", RULES
            )
        assert level.cost == D("30.013515") + D("0.03001")

    def test_close_buy_starts_a_new_cycle_only_when_something_was_bought(self) -> None:
        assert close_buy(LevelState(2, D("0.001"), D("2"), 5)).cycle == 6
        assert close_buy(LevelState(2, cycle=5)) == LevelState(2, cycle=5)

    @pytest.mark.parametrize(
        ("amount", "price", "fee"),
        [("0", "2000", "0"), ("-1", "2000", "0"), ("1", "0", "0"), ("1", "2000", "NaN")],
    )
    def test_bad_fill_is_refused(self, amount: str, price: str, fee: str) -> None:
        with pytest.raises(ValueError, match="fill"):
            apply_buy_fill(LevelState(0), D(amount), D(price), D(fee), "USDT", RULES)


def sell_all(
    level: LevelState, parts: list[tuple[str, str, str, str]]
) -> tuple[LevelState, SellProgress]:
    progress = SellProgress()
    for amount, price, fee, currency in parts:
        level, progress = apply_sell_fill(
            level, progress, D(amount), D(price), D(fee), currency, RULES
        )
    return level, progress


class TestSell:
    def test_sell_in_parts_makes_one_round_trip_on_close(self) -> None:
        level, progress = sell_all(
            BOUGHT, [("0.005", "2010", "0.01005", "USDT"), ("0.01", "2010", "0.0201", "USDT")]
        )
        assert level == LevelState(0, D(0), D("30.03"), 1)  # cost stays until the close
        assert progress == SellProgress(D("0.015"), D("30.11985"))
        outcome = close_sell(level, progress, RULES, symbol="ETH/USDT", ts=123.0)
        assert outcome == FillOutcome(
            level=LevelState(0, D(0), D(0), 1),
            progress=SellProgress(),
            round_trip=RoundTrip(
                symbol="ETH/USDT",
                level=0,
                cycle=1,
                amount=D("0.015"),
                buy_cost=D("30.03"),
                sell_proceeds=D("30.11985"),
                pnl=D("0.08985"),
                closed_at=123.0,
            ),
        )

    def test_fee_in_base_comes_off_the_holding_not_the_proceeds(self) -> None:
        level = LevelState(0, D("0.0152"), D("30"), 1)
        level, progress = sell_all(level, [("0.015", "2010", "0.000015", "ETH")])
        assert level.holding == D("0.000185")
        assert progress == SellProgress(D("0.015"), D("30.15"))

    def test_holding_never_goes_negative(self) -> None:
        level, _ = sell_all(BOUGHT, [("0.015", "2010", "0.000015", "ETH")])
        assert level.holding == 0

    def test_dust_is_counted_as_sold_at_cost(self) -> None:
        level = LevelState(0, D("0.01537"), D("30.74"), 2)
        level, progress = sell_all(level, [("0.0153", "2010", "0", "USDT")])
        assert level.holding == D("0.00007")  # below the lot: not sellable
        trip = close_sell(level, progress, RULES, symbol="ETH/USDT", ts=1.0).round_trip
        assert trip is not None
        assert (trip.amount, trip.buy_cost, trip.sell_proceeds) == (
            D("0.0153"),
            D("30.74"),
            D("30.753"),
        )
        assert trip.pnl == D("0.013")

    def test_cancelled_partial_sell_carries_on_into_the_next_sell(self) -> None:
        level = LevelState(4, D("0.0153"), D("30.6"), 3)
        level, progress = sell_all(level, [("0.005", "2050", "0.01025", "USDT")])
        cancelled = close_sell(level, progress, RULES, symbol="ETH/USDT", ts=1.0)
        assert cancelled.round_trip is None
        assert cancelled.level == LevelState(4, D("0.0103"), D("30.6"), 3)
        assert cancelled.progress == progress

        level, progress = cancelled.level, cancelled.progress
        level, progress = apply_sell_fill(
            level, progress, D("0.0103"), D("2060"), D("0.02122"), "USDT", RULES
        )
        trip = close_sell(level, progress, RULES, symbol="ETH/USDT", ts=2.0).round_trip
        assert trip == RoundTrip(
            symbol="ETH/USDT",
            level=4,
            cycle=3,
            amount=D("0.0153"),
            buy_cost=D("30.6"),
            sell_proceeds=D("10.25") - D("0.01025") + D("21.218") - D("0.02122"),
            pnl=D("31.43653") - D("30.6"),
            closed_at=2.0,
        )

    def test_close_without_any_fill_changes_nothing(self) -> None:
        outcome = close_sell(BOUGHT, SellProgress(), RULES, symbol="ETH/USDT", ts=1.0)
        assert outcome == FillOutcome(BOUGHT, SellProgress(), None)

    def test_a_loss_is_a_negative_pnl(self) -> None:
        level, progress = sell_all(BOUGHT, [("0.015", "1900", "0.0285", "USDT")])
        trip = close_sell(level, progress, RULES, symbol="ETH/USDT", ts=1.0).round_trip
        assert trip is not None
        assert trip.pnl == D("28.4715") - D("30.03")

    def test_bad_fill_is_refused(self) -> None:
        with pytest.raises(ValueError, match="fill price"):
            apply_sell_fill(BOUGHT, SellProgress(), D("0.01"), D("-1"), D(0), "USDT", RULES)


def test_a_whole_cycle_through_planner_and_ledger() -> None:
    spec, state = make_spec(buy_window=1), make_state()
    first = plan(spec, RULES, state, D("2005"), [])
    (buy,) = first.places
    assert (buy.level, buy.side, buy.price) == (0, "buy", D("2000"))

    level = apply_buy_fill(state.level(0), buy.amount, buy.price, D("0.03"), "USDT", RULES)
    state.set_level(close_buy(level))
    second = plan(spec, RULES, state, D("1999"), [])
    sells = [p for p in second.places if p.side == "sell"]
    assert [(p.level, p.price, p.amount) for p in sells] == [(0, D("2010"), D("0.015"))]
    assert 0 not in [p.level for p in second.places if p.side == "buy"]

    (sell,) = sells
    level, progress = apply_sell_fill(
        state.level(0), SellProgress(), sell.amount, sell.price, D("0.03015"), "USDT", RULES
    )
    outcome = close_sell(level, progress, RULES, symbol="ETH/USDT", ts=9.0)
    state.set_level(outcome.level)
    assert outcome.round_trip is not None
    assert outcome.round_trip.cycle == 1
    assert outcome.round_trip.pnl == D("30.15") - D("0.03015") - D("30.03")

    still_open = [o for o in as_open(second) if o.side == "buy"]  # the sell has filled
    third = plan(spec, RULES, state, D("2005"), still_open)
    assert [(p.level, p.side) for p in third.places] == [(0, "buy")]  # the level is free again
    assert third.cancels == ()
    assert state.level(0).cycle == 1
