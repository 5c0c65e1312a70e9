"""A plan cut down to what a symbol's desired state allows, on the planner's small grid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantmesh.control.desired import ACTIONS, Desired, desired_after
from quantmesh.control.restrict import restrict, steer
from quantmesh.grid.planner import OpenOrder, plan
from tests.grid.support import D, held, make_rules, make_spec, make_state

RULES, SPEC = make_rules(), make_spec()
# inventory on -1 (its sell at 2000 is open), buys open on -2 and -3, price 1995
OPEN = [
    OpenOrder("s-1", -1, "sell", D("2000"), D("0.015")),
    OpenOrder("b-2", -2, "buy", D("1980"), D("0.015")),
    OpenOrder("b-3", -3, "buy", D("1970"), D("0.015")),
]
STATE = make_state([held(-1), held(-5)])  # -5's sell is not open yet


def test_active_leaves_the_plan_as_it_is() -> None:
    full = plan(SPEC, RULES, STATE, D("1995"), OPEN)
    assert restrict(full, Desired(), OPEN) is full


def test_paused_places_and_cancels_nothing() -> None:
    full = plan(SPEC, RULES, STATE, D("1995"), OPEN)
    assert full.places  # the grid would act: the pause is what stops it
    paused = restrict(full, Desired("paused"), OPEN)
    assert paused.places == () and paused.cancels == ()


def test_cancel_all_cancels_every_open_order_and_places_nothing() -> None:
    full = plan(SPEC, RULES, STATE, D("1995"), OPEN)
    result = restrict(full, Desired("paused", cancel_orders=True), OPEN)
    assert result.places == ()
    assert sorted(c.client_order_id for c in result.cancels) == ["b-2", "b-3", "s-1"]
    assert {c.reason for c in result.cancels} == {"cancel_all"}


def test_stop_buys_keeps_the_sells_and_cancels_the_open_buys() -> None:
    opened = OPEN[:2]  # -3 has no buy yet: the plan places one
    full = plan(SPEC, RULES, STATE, D("1995"), opened)
    assert any(p.side == "buy" for p in full.places)
    result = restrict(full, Desired("stop_buys"), opened)
    assert result.places and all(p.side == "sell" for p in result.places)
    assert [p.level for p in result.places] == [p.level for p in full.places if p.side == "sell"]
    stop = [c.client_order_id for c in result.cancels if c.reason == "stop_buys"]
    assert stop == ["b-2"]
    assert all(c.side == "buy" for c in result.cancels)


def test_stop_buys_does_not_cancel_twice_what_the_plan_cancels() -> None:
    far = [*OPEN, OpenOrder("b-9", -9, "buy", D("1910"), D("0.015"))]  # out of the window
    full = plan(SPEC, RULES, STATE, D("1995"), far)
    assert "b-9" in {c.client_order_id for c in full.cancels}
    ids = [c.client_order_id for c in restrict(full, Desired("stop_buys"), far).cancels]
    assert sorted(ids) == sorted(set(ids)) and "b-9" in ids


@given(
    action=st.sampled_from(ACTIONS),
    price=st.decimals(min_value=D("1900"), max_value=D("2100"), places=2),
)
def test_no_desired_state_ever_adds_a_buy_or_more_than_the_plan_places(
    action: str, price: object
) -> None:
    desired = desired_after(action, reason="", actor="", at=0.0)  # type: ignore[arg-type]
    full = plan(SPEC, RULES, STATE, D(str(price)), OPEN)
    result = steer(desired, SPEC, RULES, STATE, D(str(price)), OPEN, reprice=True)
    if desired.mode != "active":
        assert all(p.side == "sell" for p in result.places)
    open_ids = {o.client_order_id for o in OPEN}
    if desired.mode == "liquidate":  # sells of what is held, at the price, on free levels
        busy = {o.level for o in OPEN}
        assert all(p.level not in busy for p in result.places)
        assert all(p.amount <= STATE.level(p.level).holding for p in result.places)
        assert {c.client_order_id for c in result.cancels} <= open_ids
        return
    assert result == restrict(full, desired, OPEN)
    assert set(result.places) <= set(full.places)
    assert {c.client_order_id for c in result.cancels} <= open_ids | {
        c.client_order_id for c in full.cancels
    }


def test_liquidate_is_planned_by_steer_not_cut_from_the_grid_plan() -> None:
    full = plan(SPEC, RULES, STATE, D("1995"), OPEN)
    with pytest.raises(ValueError, match="steer"):
        restrict(full, Desired("liquidate"), OPEN)
    result = steer(Desired("liquidate"), SPEC, RULES, STATE, D("1995"), OPEN, reprice=True)
    assert [(p.level, p.price) for p in result.places] == [(-5, D("1995"))]
    assert sorted(c.client_order_id for c in result.cancels) == ["b-2", "b-3", "s-1"]
