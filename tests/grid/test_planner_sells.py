"""The planner's sell side against the rule written out level by level.

The planner stops walking held levels once the sell window is full and then visits only
levels with an open sell; this reference walks every level the grid knows, as the rule
is stated in ``planner``'s docstring, and both must say the same.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given

from quantmesh.grid.levels import (
    inventory_threshold,
    level_price,
    meets_minimums,
    round_amount,
    round_sell_price,
)

from .test_planner_properties import PROPERTIES, Scenario, scenarios


def _reference(s: Scenario) -> tuple[list[tuple[int, str]], list[tuple[int, Decimal]], list[int]]:
    """(cancelled sells, placed sells, sells skipped for the minimums), level by level."""
    spec, rules = s.spec, s.rules
    threshold = inventory_threshold(rules)
    occupied = {o.level for o in s.open_orders}
    cancels: list[tuple[int, str]] = []
    places: list[tuple[int, Decimal]] = []
    skipped: list[int] = []
    rank = 0
    for level in sorted(s.state.levels.values(), key=lambda lv: lv.index):
        if level.holding < threshold:
            continue
        sells = [o for o in s.open_orders if o.side == "sell" and o.level == level.index]
        if sells:
            if rank >= spec.sell_window + spec.cancel_hysteresis:
                cancels += [(level.index, o.client_order_id) for o in sells]
            rank += 1
        elif level.index in occupied or rank >= spec.sell_window:
            continue
        else:
            price = round_sell_price(level_price(spec, level.index + 1), rules)
            amount = round_amount(level.holding, rules)
            if meets_minimums(price, amount, rules, spec.min_order_value):
                places.append((level.index, amount))
                rank += 1
            else:
                skipped.append(level.index)
    return sorted(cancels), sorted(places), skipped


@PROPERTIES
@given(scenarios())
def test_sells_follow_the_rule_over_every_level(s: Scenario) -> None:
    result = s.plan()
    cancels = sorted((c.level, c.client_order_id) for c in result.cancels if c.side == "sell")
    places = sorted((p.level, p.amount) for p in result.places if p.side == "sell")
    skipped = [k.level for k in result.skipped if k.side == "sell"]
    assert (cancels, places, skipped) == _reference(s)
