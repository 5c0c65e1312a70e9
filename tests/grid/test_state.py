"""Grid parameters and specification."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quantmesh.grid.state import GridParams, GridSpec, GridState, LevelState

from .support import D, make_spec


def test_parameters_anchored_keep_every_parameter() -> None:
    values: dict[str, Any] = {
        "symbol": "ETH/USDT",
        "interval": D("0.01"),
        "order_quantity": D(40),
        "buy_window": 4,
        "sell_window": 5,
        "spacing": "geometric",
        "min_order_value": D(12),
        "anchor_price": D(1900),
        "lower_price": D(1500),
        "upper_price": D(2500),
        "max_position": D(400),
        "cancel_hysteresis": 3,
    }
    spec = GridParams(**values).anchored_at(D(2000))
    assert spec == GridSpec(**values, anchor=D(2000))


def test_a_spec_anchored_again_changes_only_its_anchor() -> None:
    spec = make_spec(buy_window=5)
    assert spec.anchored_at(D(1000)) == make_spec(buy_window=5, anchor=D(1000))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-6, 6), st.sampled_from([0, 0, 1, 5]), st.integers(0, 2)),
        max_size=40,
    )
)
def test_holding_indices_follow_every_change_of_a_level(
    changes: list[tuple[int, int, int]],
) -> None:
    state = GridState("ETH/USDT", D(2000), levels={3: LevelState(3, D(1)), -2: LevelState(-2)})
    for index, holding, cycle in changes:
        state.set_level(LevelState(index, D(holding), D(holding), cycle))
        expected = sorted(i for i, level in state.levels.items() if level.holding > 0)
        assert state.holding_indices() == expected
