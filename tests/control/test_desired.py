"""The actions people send and the desired state each sets."""

from __future__ import annotations

import pytest

from quantmesh.control.desired import ACTIONS, Desired, desired_after, parse_action


@pytest.mark.parametrize(
    ("action", "mode", "cancel_orders"),
    [
        ("pause", "paused", False),
        ("cancel-all", "paused", True),
        ("stop-buys", "stop_buys", False),
        ("resume", "active", False),
        ("liquidate", "liquidate", False),
    ],
)
def test_each_action_sets_its_state_with_who_when_and_why(
    action: str, mode: str, cancel_orders: bool
) -> None:
    desired = desired_after(parse_action(action), reason="dip", actor="ops@host", at=12.5)
    assert (desired.mode, desired.cancel_orders) == (mode, cancel_orders)
    assert desired.as_json() == {
        "mode": mode,
        "cancel_orders": cancel_orders,
        "reason": "dip",
        "by": "ops@host",
        "at": 12.5,
    }


def test_an_unknown_action_names_the_ones_there_are() -> None:
    with pytest.raises(ValueError, match="unknown action 'halt'") as caught:
        parse_action("halt")
    assert all(action in str(caught.value) for action in ACTIONS)


def test_a_symbol_nobody_asked_anything_of_is_active() -> None:
    assert Desired().mode == "active" and not Desired().cancel_orders
