"""The desired state of a symbol that a person sets, and the actions that set it.

Desired state, not commands: it lives in the database with who set it, when and why, so a
paused symbol stays paused across restart and failover and the owner of the moment acts
on it. ``cancel-all`` is ``paused`` with every open order cancelled and kept so;
``liquidate`` sells what the grid holds at the market's price (``grid.liquidate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ControlMode = Literal["active", "paused", "stop_buys", "liquidate"]
Action = Literal["pause", "stop-buys", "resume", "cancel-all", "liquidate"]
ACTIONS: tuple[Action, ...] = get_args(Action)
MODES: tuple[ControlMode, ...] = get_args(ControlMode)


@dataclass(frozen=True, slots=True)
class Desired:
    """What a person asked of one symbol.

    ``paused``: no new order, the open ones left as they are (or all cancelled, with
    ``cancel_orders``); ``stop_buys``: sells of held inventory only, open buys cancelled;
    ``liquidate``: open buys cancelled, held inventory sold at the market's price, then
    nothing; ``active``: the grid as configured. ``at`` is a Unix time; ``actor`` who asked.
    """

    mode: ControlMode = "active"
    cancel_orders: bool = False
    reason: str = ""
    actor: str = ""
    at: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "cancel_orders": self.cancel_orders,
            "reason": self.reason,
            "by": self.actor,
            "at": self.at,
        }


ACTIVE = Desired()


def parse_action(text: str) -> Action:
    """``text`` as an action, or ``ValueError`` naming the ones there are."""
    for action in ACTIONS:
        if text == action:
            return action
    raise ValueError(f"unknown action {text!r}: use one of {', '.join(ACTIONS)}")


def desired_after(action: Action, *, reason: str, actor: str, at: float) -> Desired:
    """The desired state ``action`` sets (whatever the state before it)."""
    if action == "pause":
        return Desired("paused", False, reason, actor, at)
    if action == "cancel-all":
        return Desired("paused", True, reason, actor, at)
    if action == "stop-buys":
        return Desired("stop_buys", False, reason, actor, at)
    if action == "liquidate":
        return Desired("liquidate", False, reason, actor, at)
    return Desired("active", False, reason, actor, at)
