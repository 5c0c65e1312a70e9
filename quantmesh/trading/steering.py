"""What one symbol's steps follow, and what they are allowed to do.

- what a person asked of the symbol (the control board's desired state; ``None`` while it
  is unknown, and then nothing is placed), or a risk trigger's hold until the board has
  read it back (``RiskGuard``);
- the blocks that stop placing (a component that cannot keep what we do safe);
- the plan of a step under that state (``control.restrict.steer``), with a liquidation's
  pacing: its sells re-priced at most every ``reprice_interval``, its bound after
  ``market_after``, and one line when it has sold all it can.

Each change of state or block is logged once, when it happens.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import structlog

from quantmesh.control.desired import ACTIVE, Desired
from quantmesh.control.restrict import steer
from quantmesh.grid.liquidate import Liquidation, done
from quantmesh.grid.planner import OpenOrder, Plan
from quantmesh.grid.risk import Fired
from quantmesh.trading.book import OrderBook
from quantmesh.trading.risk import RiskGuard

log = structlog.get_logger(__name__)


class Steering:
    """One symbol's desired state, blocks and risk guard, as its trader's steps read them."""

    def __init__(
        self,
        *,
        control: Callable[[], Desired | None],
        placing_block: Callable[[], str | None],
        risk: RiskGuard,
        liquidation: Liquidation,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self._control = control  # what a person asked of this symbol; None while unknown
        self._placing_block = placing_block  # why nothing new may be placed now, if anything
        self.risk = risk
        self._liquidation = liquidation
        self._clock = clock
        self._wall = wall_clock
        self._acting_on: Desired | None = ACTIVE  # the desired state the last step followed
        self._blocked_by: str | None = None
        self._next_reprice = 0.0
        self._liquidated = False  # the liquidation in force found nothing left to sell

    @property
    def control(self) -> Desired | None:
        """What a person asked of this symbol, as this instance knows it now (a risk
        trigger's hold while the board has not read it back)."""
        return self.risk.effective(self._control())

    def check_risk(self, price: Decimal, book: OrderBook, order_value: Decimal) -> None:
        """Feed a fresh price to the risk guard (never a stale one)."""
        self.risk.check(
            price, lambda: book.position(price), book.realized_pnl, order_value, self._control()
        )

    def impose(self, fired: Fired) -> None:
        """Hold the symbol for a trigger watched elsewhere (the instance's limits)."""
        self.risk.impose(fired)

    def desired(self) -> Desired | None:
        """What the step follows (``None`` while unknown); logged when it changes."""
        desired = self.control
        if desired != self._acting_on:
            if desired is None:
                log.warning("control_unknown", effect="placing nothing until it is read")
            else:
                log.warning(
                    "control_followed",
                    mode=desired.mode,
                    cancel_orders=desired.cancel_orders,
                    reason=desired.reason,
                    by=desired.actor,
                )
            self._acting_on = desired
        return desired

    def blocked(self) -> bool:
        """Whether placing is blocked; logged when the block starts and ends."""
        reason = self._placing_block()
        if reason != self._blocked_by:
            if reason is None:
                log.warning("placing_unblocked", was=self._blocked_by)
            else:
                log.error("placing_blocked", reason=reason)
            self._blocked_by = reason
        return reason is not None

    def plan(
        self, desired: Desired, book: OrderBook, price: Decimal, open_orders: list[OpenOrder]
    ) -> Plan:
        """The plan of one step at ``price`` under ``desired``."""
        if desired.mode != "liquidate":
            return steer(
                desired, book.spec, book.rules, book.state, price, open_orders, reprice=False
            )
        now = self._clock()
        reprice = now >= self._next_reprice
        if reprice:
            self._next_reprice = now + self._liquidation.reprice_interval
        # timed from when it was asked, so an instance that takes over keeps the clock
        target = self._liquidation.target(price, self._wall() - desired.at)
        result = steer(
            desired, book.spec, book.rules, book.state, target, open_orders, reprice=reprice
        )
        finished = done(result, open_orders)
        if finished and not self._liquidated:
            log.warning("liquidation_done", unsold_levels=len(result.skipped))
        self._liquidated = finished
        return result
