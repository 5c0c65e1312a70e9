"""A liquidation's plan: buys cancelled, each held level sold whole at the price rounded
down to the tick, sells re-priced only when allowed, dust left, never more than held."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from quantmesh.grid.liquidate import Liquidation, done, liquidation_plan
from quantmesh.grid.planner import OpenOrder
from quantmesh.grid.state import LevelState

from .support import D, held, make_rules, make_state

RULES = make_rules()


def test_buys_are_cancelled_and_every_held_level_is_sold_whole_at_the_price() -> None:
    state = make_state([held(-1, "0.015"), held(-2, "0.0153")])
    open_orders = [OpenOrder("b-3", -3, "buy", D("1970"), D("0.015"))]
    result = liquidation_plan(RULES, state, D("1984.567"), open_orders, reprice=False)
    assert [(c.client_order_id, c.reason) for c in result.cancels] == [("b-3", "liquidate")]
    assert [(p.level, p.side, p.price, p.amount) for p in result.places] == [
        (-2, "sell", D("1984.56"), D("0.0153")),
        (-1, "sell", D("1984.56"), D("0.015")),
    ]
    assert not done(result, open_orders)


def test_a_level_with_an_open_order_gets_no_second_sell() -> None:
    state = make_state([held(-1), held(-2)])
    open_orders = [
        OpenOrder("s-1", -1, "sell", D("1990"), D("0.015")),  # resting above the price
        OpenOrder("b-2", -2, "buy", D("1980"), D("0.005")),  # partly filled buy
    ]
    result = liquidation_plan(RULES, state, D("1985"), open_orders, reprice=False)
    assert result.places == ()
    assert [c.client_order_id for c in result.cancels] == ["b-2"]  # the sell waits


def test_with_reprice_a_sell_above_the_price_is_cancelled_one_at_or_below_kept() -> None:
    state = make_state([held(-1), held(-2)])
    open_orders = [
        OpenOrder("s-1", -1, "sell", D("1990"), D("0.015")),
        OpenOrder("s-2", -2, "sell", D("1985"), D("0.015")),  # at the target: filling
    ]
    result = liquidation_plan(RULES, state, D("1985.004"), open_orders, reprice=True)
    assert [(c.client_order_id, c.reason) for c in result.cancels] == [("s-1", "liquidate_reprice")]
    assert result.places == ()  # -1 is sold again once the cancel is confirmed


def test_dust_is_skipped_and_the_grid_floor_does_not_apply() -> None:
    # 0.003 ETH at 1985 is 5.96 USDT: above the market's 5 USDT, below the grid's 10
    state = make_state([held(-1, "0.003", "6"), held(-2, "0.002", "4")])
    result = liquidation_plan(RULES, state, D("1985"), [], reprice=True)
    assert [(p.level, p.amount) for p in result.places] == [(-1, D("0.003"))]
    assert [(s.level, s.reason) for s in result.skipped] == [(-2, "min_notional")]
    after = make_state([held(-2, "0.002", "4")])
    finished = liquidation_plan(RULES, after, D("1985"), [], reprice=True)
    assert done(finished, [])


def test_a_price_that_is_not_positive_is_refused() -> None:
    for price in (D(0), D("-1"), D("NaN")):
        try:
            liquidation_plan(RULES, make_state(), price, [], reprice=True)
        except ValueError as exc:
            assert "positive" in str(exc)
        else:
            raise AssertionError(f"{price} accepted")


def test_the_target_goes_through_the_book_only_when_allowed_and_after_its_time() -> None:
    price = D("1985")
    assert Liquidation().target(price, 1e9) == price  # never without allow_market
    market = Liquidation(allow_market=True, market_after=60.0, market_slippage=D("0.02"))
    assert market.target(price, 59.9) == price
    assert market.target(price, 60.0) == D("1945.30")


holdings = st.dictionaries(
    st.integers(min_value=-20, max_value=5),
    st.decimals(min_value=D("0"), max_value=D("0.05"), places=5),
    max_size=8,
)


@given(
    holdings=holdings,
    busy=st.sets(st.integers(min_value=-20, max_value=5), max_size=5),
    price=st.decimals(min_value=D("0.5"), max_value=D("5000"), places=3),
    reprice=st.booleans(),
)
def test_never_more_than_held_never_a_buy_every_buy_cancelled(
    holdings: dict[int, Decimal], busy: set[int], price: Decimal, reprice: bool
) -> None:
    state = make_state(LevelState(i, h, h * 2000, 1) for i, h in holdings.items())
    open_orders = [
        OpenOrder(f"o{i}", i, "buy" if i % 2 else "sell", D("1000"), D("0.01")) for i in busy
    ]
    result = liquidation_plan(RULES, state, price, open_orders, reprice=reprice)
    assert all(p.side == "sell" and p.price <= price for p in result.places)
    placed = [p.level for p in result.places]
    assert len(placed) == len(set(placed)) and not set(placed) & busy
    for place in result.places:
        assert 0 < place.amount <= state.level(place.level).holding
    cancelled = {c.client_order_id for c in result.cancels}
    assert {o.client_order_id for o in open_orders if o.side == "buy"} <= cancelled
