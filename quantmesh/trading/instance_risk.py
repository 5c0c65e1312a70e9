"""The instance's risk limits at run time, across the symbols it trades now.

Every ``interval`` the watch (``grid.risk.InstanceWatch``) is fed the day's PnL (round
trips closed this UTC day plus the unrealized PnL of what is held at the last price) and
the exposure (what is held at the last price plus the open buys) of the symbols this
instance trades. A symbol whose price is stale counts at its last price; when every price
is stale nothing is checked (no trigger fires on a stale price, and such symbols place
nothing anyway).

When a trigger fires, every traded symbol is held for it through its trader's risk guard
(at once, then stored as desired state by ``risk:<trigger>``, as a symbol's own trigger
is), but for a symbol already held by a risk trigger; a symbol that starts trading here
while the trigger is in force is held too. The trigger stays in force until a person
resumes one of the symbols it held; the watch then starts again from that moment. After a
restart, holds found on the symbols put the trigger back in force, so a resume still
re-arms it instead of it firing again at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Protocol

import structlog

from quantmesh.control.desired import Desired
from quantmesh.domain import Tick
from quantmesh.grid.planner import OpenOrder
from quantmesh.grid.pnl import Position, day_of
from quantmesh.grid.risk import INSTANCE_TRIGGERS, Fired, InstanceLimits, InstanceWatch
from quantmesh.trading.risk import RISK_ACTOR, action_of, is_risk_hold

log = structlog.get_logger(__name__)

CHECK_INTERVAL = 0.5  # seconds between checks


class Traded(Protocol):
    """What the watch reads of a trader, and the hold it imposes."""

    @property
    def symbol(self) -> str: ...
    @property
    def trading(self) -> bool: ...
    @property
    def last_tick(self) -> Tick | None: ...
    @property
    def position(self) -> Position | None: ...
    @property
    def orders(self) -> list[OpenOrder]: ...
    @property
    def control(self) -> Desired | None: ...
    @property
    def price_fresh(self) -> bool: ...
    def realized_on(self, day: str) -> Decimal: ...
    def impose(self, fired: Fired) -> None: ...


class InstanceRisk:
    """See the module's docstring."""

    def __init__(
        self,
        limits: InstanceLimits,
        *,
        traders: Callable[[], Iterable[Traded]],
        wall_clock: Callable[[], float],
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self._watch = InstanceWatch(limits)
        self._traders = traders
        self._wall = wall_clock
        self._interval = interval
        self._since = 0.0  # when the trigger in force fired (or was found held)

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self._interval)

    def check(self) -> None:
        """One check of the limits against the symbols traded now."""
        traders = [t for t in self._traders() if t.trading and t.last_tick is not None]
        if not traders:
            return
        day = day_of(self._wall())
        if self._watch.in_force is None:
            self._adopt_held(traders)
        fired = self._watch.in_force
        if fired is not None:
            resumed = [t.symbol for t in traders if self._resumed(t.control)]
            if resumed:
                pnl, exposure = _figures(traders, day)
                self._watch.resume(day, pnl, exposure)
                log.warning(
                    "instance_risk_resumed",
                    trigger=fired.trigger,
                    symbols=resumed,
                    day_pnl=str(pnl),
                    exposure=str(exposure),
                )
            else:
                self._hold(fired, traders)  # symbols that joined meanwhile
            return
        if not any(t.price_fresh for t in traders):
            return
        pnl, exposure = _figures(traders, day)
        fired = self._watch.check(day, pnl, exposure)
        if fired is not None:
            self._since = self._wall()
            log.error(
                "instance_risk_triggered",
                trigger=fired.trigger,
                action=fired.action,
                values=dict(fired.values),
                symbols=[t.symbol for t in traders],
            )
            self._hold(fired, traders)

    def _hold(self, fired: Fired, traders: Sequence[Traded]) -> None:
        for trader in traders:
            control = trader.control
            if control is not None and not is_risk_hold(control):
                trader.impose(fired)

    def _resumed(self, control: Desired | None) -> bool:
        """Whether a person resumed (or otherwise set) a symbol after the trigger fired."""
        return control is not None and not is_risk_hold(control) and control.at > self._since

    def _adopt_held(self, traders: Sequence[Traded]) -> None:
        """A hold of one of the instance's triggers found on a symbol (stored before a
        restart, or by another instance): that trigger is in force since the hold."""
        for trader in traders:
            control = trader.control
            if control is None or not is_risk_hold(control):
                continue
            trigger = control.actor.removeprefix(RISK_ACTOR)
            for known in INSTANCE_TRIGGERS:
                if trigger == known:
                    self._watch.in_force = Fired(known, action_of(control), ())
                    self._since = control.at
                    return


def _figures(traders: Iterable[Traded], day: str) -> tuple[Decimal, Decimal]:
    """The day's PnL and the exposure of ``traders`` (each with a price)."""
    pnl = exposure = Decimal(0)
    for trader in traders:
        position, tick = trader.position, trader.last_tick
        assert position is not None and tick is not None
        pnl += trader.realized_on(day) + position.unrealized
        exposure += position.inventory * tick.price
        exposure += sum((o.price * o.amount for o in trader.orders if o.side == "buy"), Decimal(0))
    return pnl, exposure
