"""What people are told about: the events, their levels and scopes, and how a component
hands one over (``Notifier.emit``).

An event is a small frozen value made where something happened (the coordinator took a
symbol over, the lock backend went down, the write buffer started holding writes). The
component that made it calls ``notifier.emit(event)``: a non-blocking call that at most
puts the event in a queue, so it never slows trading down, and never raises.
``NOP`` is the notifier of a service without channels: it does nothing.

Scopes say who sends an event in a fleet:

- ``symbol``: the symbol's owner, the only instance that sees it (a take-over, a burst of
  rejected orders, a risk trigger, a round trip);
- ``instance``: each instance its own (started, stopped, its daily summary);
- ``fleet``: one instance of the fleet, elected per event key through Redis (the lock
  backend halted or recovered, the database outage began or ended).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, Protocol, get_args

from quantmesh.config.notifications import NotificationEvent, NotificationLevel

Scope = Literal["symbol", "instance", "fleet"]
# Every event a channel can ask for, and the ones ``all`` means (round trips are opt-in).
EVENT_KINDS: Final[tuple[NotificationEvent, ...]] = get_args(NotificationEvent)
DEFAULT_EVENTS: Final = frozenset(kind for kind in EVENT_KINDS if kind != "round_trip")
LEVELS: Final[tuple[NotificationLevel, ...]] = ("info", "warning", "critical")

# What an event carries besides its text: JSON values only (the webhook sends them as is).
Json = str | int | float | bool | None | Sequence["Json"] | Mapping[str, "Json"]


def level_rank(level: NotificationLevel) -> int:
    """``info`` < ``warning`` < ``critical``."""
    return LEVELS.index(level)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing to tell people. ``key`` names the event for the fleet election: two
    instances that see the same fleet event make the same key."""

    kind: NotificationEvent | Literal["test", "order_rejected"]
    level: NotificationLevel
    title: str
    text: str
    scope: Scope
    symbol: str | None = None
    data: Mapping[str, Json] = field(default_factory=dict)
    key: str = ""
    at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Notifier(Protocol):
    """Takes events to send; ``emit`` returns at once and never raises."""

    def emit(self, event: Event) -> None:
        """Queue ``event`` for the channels that want it (or drop it, counted)."""
        ...


class NotificationService(Notifier, Protocol):
    """A notifier the service starts and closes (it sends in the background)."""

    async def start(self) -> None: ...

    async def close(self, *, drain: bool = True) -> None:
        """Let what is queued go out (bounded in time; not when ``drain`` is false),
        then stop. Never raises but cancellation."""
        ...


class NopNotifier:
    """The notifier when no channel is configured: nothing happens."""

    def emit(self, event: Event) -> None:
        """Nothing to do."""

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self, *, drain: bool = True) -> None:
        """Nothing to close."""


NOP: Final = NopNotifier()


def _dec(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


# the events ----------------------------------------------------------------------------


def instance_started(symbols: Sequence[str], role: str) -> Event:
    listed = ", ".join(symbols) or "none"
    return Event(
        "instance_started",
        "info",
        "Instance started",
        f"Started as {role}, configured with {listed}.",
        "instance",
        data={"symbols": list(symbols), "role": role},
    )


def instance_stopped(reason: str, failed: Mapping[str, str]) -> Event:
    """``reason``: why it stopped (a signal, a fatal error); ``failed``: symbols that
    failed for good, and why."""
    level: NotificationLevel = "warning" if failed else "info"
    if reason != "stopped on request":
        level = "critical"
    text = f"Stopped: {reason}."
    if failed:
        text += " Failed: " + "; ".join(f"{s}: {why}" for s, why in sorted(failed.items()))
    return Event(
        "instance_stopped",
        level,
        "Instance stopped",
        text,
        "instance",
        data={"reason": reason, "failed": dict(failed)},
    )


def symbol_taken_over(symbol: str, previous_owner: str, unowned_for: float | None) -> Event:
    """This instance took ``symbol`` over from ``previous_owner``, which never released
    it; ``unowned_for``: seconds since that owner last renewed its lease (None: unknown)."""
    gap = "an unknown time" if unowned_for is None else _seconds(unowned_for)
    return Event(
        "symbol_taken_over",
        "warning",
        f"{symbol} taken over",
        f"{symbol} taken over from {previous_owner}, which stopped renewing its lease; "
        f"unowned for {gap}.",
        "symbol",
        symbol=symbol,
        data={
            "previous_owner": previous_owner,
            "unowned_seconds": None if unowned_for is None else round(unowned_for, 3),
        },
    )


def lock_halted(mode: str, reason: str) -> Event:
    """The lock backend failed its health check; ``mode``: ``halted`` or ``single_instance``."""
    effect = (
        "no orders are placed or cancelled until it is back"
        if mode == "halted"
        else "trading on a local lock (safe only if no other instance runs)"
    )
    return Event(
        "lock_halted",
        "critical",
        "Lock backend down",
        f"The lock backend is unreachable ({reason}): {effect}.",
        "fleet",
        data={"mode": mode, "reason": reason},
        key="lock_halted",
    )


def lock_recovered(previous: str, down_for: float) -> Event:
    return Event(
        "lock_recovered",
        "info",
        "Lock backend recovered",
        f"The lock backend is back after {_seconds(down_for)} ({previous}); trading resumes.",
        "fleet",
        data={"previous_mode": previous, "down_seconds": round(down_for, 3)},
        key="lock_recovered",
    )


def db_outage_began(operation: str, error: str) -> Event:
    return Event(
        "db_outage_began",
        "critical",
        "Database unreachable",
        f"The database refused {operation} ({error}); writes are buffered and journaled "
        "until it is back.",
        "fleet",
        data={"operation": operation, "error": error},
        key="db_outage_began",
    )


def db_outage_ended(buffered: int, replayed: int, lasted: float) -> Event:
    return Event(
        "db_outage_ended",
        "info",
        "Database back",
        f"The database is back after {_seconds(lasted)}: {buffered} writes were buffered, "
        f"{replayed} replayed.",
        "fleet",
        data={"buffered": buffered, "replayed": replayed, "outage_seconds": round(lasted, 3)},
        key="db_outage_ended",
    )


def risk_triggered(symbol: str, trigger: str, detail: str) -> Event:
    """A risk trigger of ``symbol`` fired (``trigger``: its name)."""
    return Event(
        "risk_triggered",
        "critical",
        f"{symbol}: risk trigger {trigger}",
        f"{symbol}: risk trigger {trigger} fired: {detail}.",
        "symbol",
        symbol=symbol,
        data={"trigger": trigger, "detail": detail},
    )


def orders_rejected(symbol: str, count: int, window: float, reasons: Mapping[str, int]) -> Event:
    listed = ", ".join(f"{reason} x{n}" for reason, n in sorted(reasons.items()))
    return Event(
        "orders_rejected",
        "warning",
        f"{symbol}: orders rejected",
        f"{symbol}: the exchange rejected {count} orders within {_seconds(window)} ({listed}).",
        "symbol",
        symbol=symbol,
        data={"count": count, "window_seconds": window, "reasons": dict(reasons)},
    )


def order_rejected(symbol: str, reason: str) -> Event:
    """One order of ``symbol`` rejected: not sent as such; the dispatcher counts them and
    sends ``orders_rejected`` for a burst (``bursts``)."""
    return Event(
        "order_rejected",
        "info",
        f"{symbol}: order rejected",
        reason,
        "symbol",
        symbol=symbol,
        data={"reason": reason},
    )


@dataclass(frozen=True, slots=True)
class SymbolDay:
    """One symbol's day in the daily summary."""

    symbol: str
    round_trips: int
    realized_pnl: Decimal
    fees: Decimal
    inventory: Decimal
    inventory_value: Decimal | None  # at the last price; None when no price is known


def daily_summary(day: str, symbols: Sequence[SymbolDay], error: str | None = None) -> Event:
    """The day's summary of this instance (``day``: ``YYYY-MM-DD``, UTC)."""
    lines = [
        f"{s.symbol}: {s.round_trips} round trips, PnL {_dec(s.realized_pnl)}, fees "
        f"{_dec(s.fees)}, inventory {_dec(s.inventory)}"
        + (f" worth {_dec(s.inventory_value)}" if s.inventory_value is not None else "")
        for s in symbols
    ]
    if error is not None:
        lines.append(f"incomplete: {error}")
    total = sum((s.realized_pnl for s in symbols), Decimal(0))
    return Event(
        "daily_summary",
        "info",
        f"Daily summary {day}",
        "\n".join([f"Realized PnL {_dec(total)} over {len(symbols)} symbols.", *lines]),
        "instance",
        data={
            "day": day,
            "error": error,
            "symbols": [
                {
                    "symbol": s.symbol,
                    "round_trips": s.round_trips,
                    "realized_pnl": _dec(s.realized_pnl),
                    "fees": _dec(s.fees),
                    "inventory": _dec(s.inventory),
                    "inventory_value": None
                    if s.inventory_value is None
                    else _dec(s.inventory_value),
                }
                for s in symbols
            ],
        },
    )


def round_trip(symbol: str, level: int, cycle: int, amount: Decimal, pnl: Decimal) -> Event:
    return Event(
        "round_trip",
        "info",
        f"{symbol}: round trip",
        f"{symbol}: level {level} bought and sold {_dec(amount)}, PnL {_dec(pnl)}.",
        "symbol",
        symbol=symbol,
        data={"level": level, "cycle": cycle, "amount": _dec(amount), "pnl": _dec(pnl)},
    )


def notify_test_message() -> Event:
    """``quantmesh notify-test``: sent to every channel, whatever it asks for."""
    return Event(
        "test",
        "info",
        "Test message",
        "QuantMesh notify-test: this channel works.",
        "instance",
    )
