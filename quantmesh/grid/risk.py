"""Risk exits: a symbol's limits and an instance's, and the watches that say when one is
crossed. Pure.

Triggers (``RiskLimits``):

- ``stop_loss``: the price at or below ``stop_loss_price``;
- ``take_profit``: the price at or above ``take_profit_price``;
- ``max_drawdown``: equity (realized plus unrealized PnL) fallen from its peak by more
  than ``max_drawdown`` (quote currency), or by more than ``max_drawdown_percent`` of the
  capital the grid commits (cost of what it holds at the peak, at least one order's worth);
- ``max_loss``: equity below ``-max_loss``.

Each names its action: ``stop_buys`` (keep selling what is held), ``halt`` (cancel every
order, place nothing) or ``liquidate`` (cancel the buys, sell what is held at the market's
price: ``grid.liquidate``). ``RiskWatch.check`` is called with every fresh price; the first
trigger crossed is returned once, with the values that crossed it, and the watch then stays
quiet (the trigger is recorded as desired state, which a person clears).

The instance's limits (``InstanceLimits``: ``max_daily_loss``, ``max_total_position``)
are watched by ``InstanceWatch`` across the symbols it trades; see there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any, Final, Literal, get_args

Trigger = Literal["stop_loss", "take_profit", "max_drawdown", "max_loss"]
InstanceTrigger = Literal["max_daily_loss", "max_total_position"]
RiskAction = Literal["stop_buys", "halt", "liquidate"]
TRIGGERS: Final[tuple[Trigger, ...]] = get_args(Trigger)
INSTANCE_TRIGGERS: Final[tuple[InstanceTrigger, ...]] = get_args(InstanceTrigger)
ACTIONS: Final[tuple[RiskAction, ...]] = get_args(RiskAction)
_EXACT: Final = Context(prec=60)
_HUNDRED: Final = Decimal(100)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """One symbol's risk limits (None: that trigger is off) and each trigger's action."""

    stop_loss_price: Decimal | None = None
    take_profit_price: Decimal | None = None
    max_drawdown: Decimal | None = None  # quote currency
    max_drawdown_percent: Decimal | None = None  # of the capital committed at the peak
    max_loss: Decimal | None = None  # quote currency, a positive amount
    actions: Mapping[Trigger, RiskAction] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return any(
            value is not None
            for value in (
                self.stop_loss_price,
                self.take_profit_price,
                self.max_drawdown,
                self.max_drawdown_percent,
                self.max_loss,
            )
        )

    def action(self, trigger: Trigger) -> RiskAction:
        return self.actions.get(trigger, "halt")


@dataclass(frozen=True, slots=True)
class Fired:
    """A trigger crossed: which, the action it names, and the values that crossed it."""

    trigger: Trigger | InstanceTrigger
    action: RiskAction
    values: tuple[tuple[str, str], ...]

    @property
    def reason(self) -> str:
        """One line for the audit, the log and ``/api/status``."""
        shown = ", ".join(f"{name} {value}" for name, value in self.values)
        return f"risk {self.trigger} ({shown}): {self.action}"


@dataclass(slots=True)
class RiskWatch:
    """Watches one symbol's prices and equity against ``limits``; fires at most once."""

    limits: RiskLimits
    peak: Decimal | None = None  # the highest equity seen since the watch started
    peak_capital: Decimal = Decimal(0)  # the capital committed when that peak was seen
    fired: Fired | None = None
    # price triggers still crossed when a person resumed: quiet until the price comes back
    waiting: set[Trigger] = field(default_factory=set)

    def resume(
        self, price: Decimal, equity: Decimal, committed: Decimal, order_value: Decimal
    ) -> None:
        """A person resumed the symbol after a trigger: watch again, the peak starting at
        ``equity``; a price trigger still crossed at ``price`` waits for the price to come
        back before it can fire again (else a resume would be undone at once)."""
        self.fired = None
        self.peak = equity
        self.peak_capital = max(committed, order_value)
        self.waiting = {t for t in ("stop_loss", "take_profit") if self._crossed(t, price)}

    def _crossed(self, trigger: Trigger, price: Decimal) -> bool:
        limits = self.limits
        if trigger == "stop_loss":
            return limits.stop_loss_price is not None and price <= limits.stop_loss_price
        return limits.take_profit_price is not None and price >= limits.take_profit_price

    def check(
        self, price: Decimal, equity: Decimal, committed: Decimal, order_value: Decimal
    ) -> Fired | None:
        """The trigger ``price`` and ``equity`` (realized + unrealized PnL) cross, if any.

        ``committed`` is the quote the grid has in inventory at cost; ``order_value`` one
        order's worth (the floor of the capital a percentage drawdown is measured on).
        Returns a ``Fired`` once; after that, None.
        """
        if self.fired is not None:
            return None
        if self.peak is None or equity > self.peak:
            self.peak = equity
            self.peak_capital = max(committed, order_value)
        limits = self.limits
        self.waiting = {t for t in self.waiting if self._crossed(t, price)}
        fired = None
        stop, take = limits.stop_loss_price, limits.take_profit_price
        if stop is not None and "stop_loss" not in self.waiting and price <= stop:
            fired = self._fire("stop_loss", ("price", price), ("stop_loss_price", stop))
        elif take is not None and "take_profit" not in self.waiting and price >= take:
            fired = self._fire("take_profit", ("price", price), ("take_profit_price", take))
        elif limits.max_loss is not None and equity < -limits.max_loss:
            fired = self._fire("max_loss", ("equity", equity), ("max_loss", limits.max_loss))
        else:
            fired = self._drawdown(equity)
        self.fired = fired
        return fired

    def _drawdown(self, equity: Decimal) -> Fired | None:
        assert self.peak is not None
        fallen = _EXACT.subtract(self.peak, equity)
        limits = self.limits
        if limits.max_drawdown is not None and fallen > limits.max_drawdown:
            return self._fire(
                "max_drawdown",
                ("drawdown", fallen),
                ("peak", self.peak),
                ("max_drawdown", limits.max_drawdown),
            )
        if limits.max_drawdown_percent is not None and self.peak_capital > 0:
            percent = _EXACT.divide(_EXACT.multiply(fallen, _HUNDRED), self.peak_capital)
            if percent > limits.max_drawdown_percent:
                return self._fire(
                    "max_drawdown",
                    ("drawdown", f"{_plain(_EXACT.quantize(percent, Decimal('0.01')))}%"),
                    ("peak", self.peak),
                    ("max_drawdown", f"{_plain(limits.max_drawdown_percent)}%"),
                )
        return None

    def _fire(self, trigger: Trigger, *values: tuple[str, Decimal | str]) -> Fired:
        return _fired(trigger, self.limits.action(trigger), values)


@dataclass(frozen=True, slots=True)
class InstanceLimits:
    """The limits of one instance, across the symbols it trades (None: off), each with its
    action (``max_daily_loss``: ``halt``, ``max_total_position``: ``stop_buys`` unless
    set)."""

    max_daily_loss: Decimal | None = None  # quote currency, a positive amount
    max_total_position: Decimal | None = None  # quote currency
    actions: Mapping[InstanceTrigger, RiskAction] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return self.max_daily_loss is not None or self.max_total_position is not None

    def action(self, trigger: InstanceTrigger) -> RiskAction:
        default: RiskAction = "stop_buys" if trigger == "max_total_position" else "halt"
        return self.actions.get(trigger, default)


@dataclass(slots=True)
class InstanceWatch:
    """Watches the instance's day PnL and exposure against ``limits``.

    ``day_pnl`` is the realized PnL of the round trips closed this UTC day plus the
    unrealized PnL of what is held now; ``exposure`` the quote value of what is held (at
    the last price) plus the open buys. A trigger fires once, then stays in force until
    ``resume``: a person resumed a symbol it held. From then on ``max_daily_loss`` fires
    again when the day's PnL falls another ``max_daily_loss`` below where it was at the
    resume (a new UTC day starts from zero), and ``max_total_position`` once the exposure
    has come back under the limit and crosses it again.
    """

    limits: InstanceLimits
    in_force: Fired | None = None
    floor: Decimal | None = None  # the day PnL at which max_daily_loss fires
    day: str = ""  # the UTC day ``floor`` belongs to
    waiting: bool = False  # max_total_position: still above the limit since the resume

    def check(self, day: str, day_pnl: Decimal, exposure: Decimal) -> Fired | None:
        """The trigger these figures cross, once; None while one is in force."""
        if self.in_force is not None:
            return None
        limits = self.limits
        if day != self.day:
            self.day, self.floor = day, None
        cap = limits.max_total_position
        self.waiting = self.waiting and cap is not None and exposure > cap
        fired = None
        if limits.max_daily_loss is not None:
            floor = -limits.max_daily_loss if self.floor is None else self.floor
            if day_pnl < floor:
                fired = _fired(
                    "max_daily_loss",
                    limits.action("max_daily_loss"),
                    (("day_pnl", day_pnl), ("max_daily_loss", limits.max_daily_loss)),
                )
        if fired is None and cap is not None and not self.waiting and exposure > cap:
            fired = _fired(
                "max_total_position",
                limits.action("max_total_position"),
                (("exposure", exposure), ("max_total_position", cap)),
            )
        self.in_force = fired
        return fired

    def resume(self, day: str, day_pnl: Decimal, exposure: Decimal) -> None:
        """A person resumed a symbol the trigger in force held: watch again from here."""
        fired, self.in_force = self.in_force, None
        if fired is None:
            return
        limits = self.limits
        if fired.trigger == "max_daily_loss" and limits.max_daily_loss is not None:
            self.day = day
            self.floor = _EXACT.subtract(min(day_pnl, Decimal(0)), limits.max_daily_loss)
        cap = limits.max_total_position
        self.waiting = cap is not None and exposure > cap


def _fired(
    trigger: Trigger | InstanceTrigger, action: RiskAction, values: Iterable[tuple[str, Any]]
) -> Fired:
    shown = tuple((name, v if isinstance(v, str) else _plain(v)) for name, v in values)
    return Fired(trigger, action, shown)


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"
