"""What ``/api/status`` and the readiness checks read off the running traders."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from quantmesh.control.desired import Desired
from quantmesh.domain import ClockOffset, Tick
from quantmesh.grid.levels import level_price
from quantmesh.grid.planner import OpenOrder
from quantmesh.grid.pnl import Position
from quantmesh.grid.state import GridSpec, LevelState
from quantmesh.observability.health import Check


class TraderView(Protocol):
    """The read-only face of a trader that status and readiness need."""

    symbol: str
    last_tick: Tick | None

    @property
    def trading(self) -> bool: ...

    @property
    def price_age(self) -> float | None: ...

    @property
    def inventory(self) -> Decimal: ...

    @property
    def open_order_count(self) -> int: ...

    @property
    def realized_pnl(self) -> Decimal: ...

    @property
    def fees_paid(self) -> Mapping[str, Decimal]: ...

    @property
    def position(self) -> Position | None: ...

    @property
    def control(self) -> Desired | None: ...

    @property
    def grid_spec(self) -> GridSpec | None: ...

    @property
    def orders(self) -> Sequence[OpenOrder]: ...

    @property
    def holdings(self) -> Sequence[LevelState]: ...


def symbol_status(trader: TraderView) -> dict[str, Any]:
    """One owned symbol's row of ``/api/status``; ``orders`` and ``levels`` (the levels
    holding inventory) are the ladder the live page draws, by level, lowest first."""
    tick = trader.last_tick
    age = trader.price_age
    return {
        "trading": trader.trading,
        "price": None if tick is None else str(tick.price),
        "price_age_seconds": None if age is None else round(age, 3),
        "inventory": str(trader.inventory),
        "open_orders": trader.open_order_count,
        "realized_pnl": str(trader.realized_pnl),
        "fees_paid": {currency: _plain(fee) for currency, fee in sorted(trader.fees_paid.items())},
        **position_status(trader.position),
        "control": control_status(trader.control),
        "orders": [order_status(order) for order in sorted(trader.orders, key=_by_level)],
        "levels": [
            level_status(trader.grid_spec, level)
            for level in sorted(trader.holdings, key=lambda lvl: lvl.index)
        ],
    }


def position_status(held: Position | None) -> dict[str, str | None]:
    """What the grid holds at the last price: its cost, average cost and unrealized PnL
    (None before a price; ``average_cost`` None when nothing is held)."""
    if held is None:
        return {"cost": None, "average_cost": None, "unrealized_pnl": None}
    average = held.average_cost
    return {
        "cost": _plain(held.cost),
        "average_cost": None if average is None else _plain(average),
        "unrealized_pnl": _plain(held.unrealized),
    }


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def order_status(order: OpenOrder) -> dict[str, object]:
    """An open order of the grid (or one whose placement outcome is still unknown)."""
    return {
        "client_order_id": order.client_order_id,
        "level": order.level,
        "side": order.side,
        "price": str(order.price),
        "amount": str(order.amount),
    }


def level_status(grid: GridSpec | None, level: LevelState) -> dict[str, object]:
    """A level's inventory: base ``holding`` bought there and not yet sold, its ``cost``
    in quote, and the level's ``price`` (``None`` without the grid's spec)."""
    return {
        "level": level.index,
        "price": None if grid is None else str(level_price(grid, level.index)),
        "holding": str(level.holding),
        "cost": str(level.cost),
    }


def _by_level(order: OpenOrder) -> tuple[int, str]:
    return order.level, order.side


def control_status(desired: Desired | None) -> dict[str, object]:
    """What a person asked of a symbol (``mode`` ``unknown`` before it could be read)."""
    if desired is None:
        return {"mode": "unknown", "reason": "the desired state was not read yet"}
    return desired.as_json()


def service_status(
    instance: Mapping[str, Any],
    traders: Sequence[TraderView],
    sections: Mapping[str, Callable[[], Any]],
) -> dict[str, Any]:
    """The ``/api/status`` body: the instance, each owned symbol, then each component's
    section (database buffer, lock backend, ...)."""
    body: dict[str, Any] = dict(instance)
    body["symbols"] = {t.symbol: symbol_status(t) for t in traders}
    for name, section in sections.items():
        body[name] = section()
    return body


def exchange_clock_status(offset: ClockOffset | None) -> dict[str, float] | None:
    """The ``exchange_clock`` section: the exchange's clock against this host's as last
    measured (``offset_s`` positive: the exchange is ahead), or ``None`` before the first
    measurement and for an exchange sharing this process's clock (the simulated one).
    Creates and cancels carry expiries computed from it (see ``exchange/ccxt/expiry.py``)."""
    if offset is None:
        return None
    return {
        "offset_s": round(offset.offset, 4),
        "uncertainty_s": round(offset.uncertainty, 4),
        "measured_at": round(offset.measured_at, 3),
    }


def traders_check(traders: Sequence[TraderView], failed: Mapping[str, str]) -> Check:
    """Ready when every owned symbol is trading: grid loaded, reconciled, not failed.

    An instance that owns nothing (a standby, or its symbols held elsewhere) is ready: it
    stands by."""
    if not traders and not failed:
        return Check(True, "owns no symbol now: standing by")
    problems = [f"{s} failed ({reason})" for s, reason in sorted(failed.items())]
    problems += sorted(
        f"{t.symbol} not trading" for t in traders if not t.trading and t.symbol not in failed
    )
    if problems:
        return Check(False, "; ".join(problems))
    return Check(True, f"{len(traders)} trading")


def prices_check(traders: Sequence[TraderView], max_age: float) -> Check:
    """Ready when every symbol has a price younger than ``max_age`` seconds."""
    if not traders:
        return Check(True, "no symbols traded")
    stale = []
    for trader in traders:
        age = trader.price_age
        if age is None:
            stale.append(f"{trader.symbol} (no price yet)")
        elif age > max_age:
            stale.append(f"{trader.symbol} ({age:.0f} s old)")
    if stale:
        return Check(False, f"prices older than {max_age:g} s: {', '.join(stale)}")
    return Check(True, f"all prices younger than {max_age:g} s")


def durability_block(volatile: int) -> str | None:
    """Why nothing new may be placed while ``volatile`` writes are held in memory only (a
    crash would lose them); ``None`` when every buffered write is journaled."""
    if not volatile:
        return None
    return (
        f"{volatile} writes held in memory only (the journal cannot be written); "
        "placing nothing new until they are stored"
    )


def buffer_check(pending: int, in_memory: int, capacity: int, volatile: int = 0) -> Check:
    """Ready while writes reach the database, or wait for it within the memory bound.

    Past the bound, writes still land in the journal (nothing is lost), but an instance
    that far behind should not be taking on work.
    """
    blocked = durability_block(volatile)
    if blocked is not None:
        return Check(False, blocked)
    if pending == 0:
        return Check(True, "no writes waiting")
    if pending <= capacity:
        return Check(True, f"database unreachable; {pending} writes buffered of {capacity}")
    return Check(
        False,
        f"database unreachable for long: {pending} writes waiting, "
        f"{pending - in_memory} of them beyond the memory buffer ({capacity})",
    )
