"""What a step does under a symbol's desired state: the grid plan cut down to what the state
allows, or a liquidation.

- ``active``: the plan as it is;
- ``stop_buys``: its sells and cancels, plus a cancel of every open buy;
- ``paused``: nothing, or with ``cancel_orders`` a cancel of every open order;
- ``liquidate``: not the grid's plan but ``grid.liquidate``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from quantmesh.control.desired import Desired
from quantmesh.domain import MarketRules
from quantmesh.grid.liquidate import liquidation_plan
from quantmesh.grid.planner import CancelOrder, OpenOrder, Plan
from quantmesh.grid.planner import plan as grid_plan
from quantmesh.grid.state import GridSpec, GridState


def steer(
    desired: Desired,
    spec: GridSpec,
    rules: MarketRules,
    state: GridState,
    price: Decimal,
    open_orders: Iterable[OpenOrder],
    *,
    reprice: bool,
) -> Plan:
    """The plan of one step at ``price`` under ``desired`` (``reprice``: a liquidation may
    re-price its sells in this step)."""
    orders = tuple(open_orders)
    if desired.mode == "liquidate":
        return liquidation_plan(rules, state, price, orders, reprice=reprice)
    return restrict(grid_plan(spec, rules, state, price, orders), desired, orders)


def restrict(plan: Plan, desired: Desired, open_orders: Iterable[OpenOrder]) -> Plan:
    """The part of ``plan`` that ``desired`` allows, plus the cancels it asks for."""
    if desired.mode == "liquidate":
        raise ValueError("a liquidation has its own plan: use steer")
    if desired.mode == "active":
        return plan
    if desired.mode == "paused":
        if not desired.cancel_orders:
            return Plan(cancels=(), places=(), skipped=())
        return Plan(cancels=_cancels(open_orders, "cancel_all", set()), places=(), skipped=())
    buys = [order for order in open_orders if order.side == "buy"]
    planned = {cancel.client_order_id for cancel in plan.cancels}
    return Plan(
        cancels=plan.cancels + _cancels(buys, "stop_buys", planned),
        places=tuple(place for place in plan.places if place.side == "sell"),
        skipped=tuple(skip for skip in plan.skipped if skip.side == "sell"),
    )


def _cancels(
    orders: Iterable[OpenOrder], reason: str, planned: set[str]
) -> tuple[CancelOrder, ...]:
    """Cancels of ``orders``, but for those already ``planned``."""
    return tuple(
        CancelOrder(order.client_order_id, order.level, order.side, reason)
        for order in orders
        if order.client_order_id not in planned
    )
