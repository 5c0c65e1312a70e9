"""``SqlControlStore``: the control board's ``ControlStore`` over SQLAlchemy Core.

What people ask of a symbol is kept in two tables (``models``): ``symbol_controls``, the
desired state of each symbol that has one, and ``control_audit``, every action taken,
ordered by ``id``. ``save_control`` writes both in one transaction, the state row first:
a second action on the same symbol waits for that row's lock, so the newest audit entry
of a symbol is always the state stored.

The store runs its transactions on a ``runner`` (``runner_for``), normally the
repository's own, with the same error classification: a database that cannot be reached
raises ``StorageUnavailable`` with a one-line message that names no password. Nothing is
buffered: an action not stored is an action not taken (the board tells the person so).
The schema is brought to its revision by the repository's ``start``.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

from sqlalchemy import Connection, select

from quantmesh.control.board import AuditEntry
from quantmesh.control.desired import ACTIONS, MODES, Desired
from quantmesh.errors import StorageError
from quantmesh.storage import models
from quantmesh.storage.rows import checked
from quantmesh.storage.runner import Runner
from quantmesh.storage.statements import scoped, typed, upsert

_T = TypeVar("_T", bound=str)

CONTROL_KEY: Final = ("exchange", "symbol")
CONTROL_VALUES: Final = ("mode", "cancel_orders", "reason", "actor", "set_at", "instance")

_controls = models.symbol_controls
_audit = models.control_audit
_CONTROLS: Final = select(
    _controls.c.symbol,
    _controls.c.mode,
    _controls.c.cancel_orders,
    _controls.c.reason,
    _controls.c.actor,
    _controls.c.set_at,
).where(_controls.c.exchange == typed("k_exchange", _controls.c.exchange))
_AUDIT: Final = _audit.insert()
_EXCHANGE_AUDIT: Final = (
    select(_audit)
    .where(_audit.c.exchange == typed("k_exchange", _audit.c.exchange))
    .order_by(_audit.c.id.desc())
)
_SYMBOL_AUDIT: Final = select(_audit).where(*scoped(_audit)).order_by(_audit.c.id.desc())


class SqlControlStore:
    """Desired state and control audit of one exchange's symbols, on ``runner``.

    The store does not own ``runner``: whoever made it closes it (the repository, when
    the store shares the repository's runner).
    """

    def __init__(self, runner: Runner, exchange: str) -> None:
        if not exchange or len(exchange) > models.EXCHANGE_LEN:
            raise ValueError(f"exchange name must be 1 to {models.EXCHANGE_LEN} characters")
        self._runner = runner
        self._exchange = exchange
        self._upsert_control = upsert(runner.dialect, _controls, CONTROL_KEY, CONTROL_VALUES)

    @property
    def exchange(self) -> str:
        return self._exchange

    async def load_controls(self) -> dict[str, Desired]:
        """The desired state of every symbol of this exchange that has one."""

        def read(conn: Connection) -> dict[str, Desired]:
            rows = conn.execute(_CONTROLS, {"k_exchange": self._exchange})
            return {row.symbol: _desired(row, row.set_at) for row in rows}

        return await self._runner.run("load_controls", read, write=False)

    async def save_control(self, entry: AuditEntry) -> None:
        """``entry.desired`` as the symbol's state and ``entry`` in the audit, in one
        transaction. ``StorageRejected`` (nothing written) for a value a column cannot
        hold; ``StorageUnavailable`` when the database cannot be reached."""
        desired = entry.desired
        shared = {
            "exchange": self._exchange,
            "symbol": entry.symbol,
            "mode": desired.mode,
            "cancel_orders": desired.cancel_orders,
            "reason": desired.reason,
            "actor": desired.actor,
            "instance": entry.instance,
        }
        state = checked(_controls, {**shared, "set_at": desired.at})
        action = checked(_audit, {**shared, "action": entry.action, "at": desired.at})

        def write(conn: Connection) -> None:
            conn.execute(self._upsert_control, [state])  # locks the row: see the docstring
            conn.execute(_AUDIT, [action])

        await self._runner.run("save_control", write, write=True)

    async def control_audit(self, symbol: str | None, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` actions of this exchange (of ``symbol`` only, unless
        ``None``), newest first."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        query = (_EXCHANGE_AUDIT if symbol is None else _SYMBOL_AUDIT).limit(limit)
        params = {"k_exchange": self._exchange, "k_symbol": symbol}

        def read(conn: Connection) -> list[AuditEntry]:
            return [
                AuditEntry(
                    row.symbol,
                    _known(row.action, ACTIONS, "control action"),
                    _desired(row, row.at),
                    row.instance,
                )
                for row in conn.execute(query, params)
            ]

        return await self._runner.run("control_audit", read, write=False)


def _desired(row: Any, at: float) -> Desired:
    """The desired state a row of either table holds (``at``: its time column)."""
    mode = _known(row.mode, MODES, "control mode")
    return Desired(mode, bool(row.cancel_orders), row.reason, row.actor, float(at))


def _known(value: str, known: tuple[_T, ...], what: str) -> _T:
    """``value`` as one of ``known``: a row written by a newer version may hold another,
    which this one cannot act on."""
    for candidate in known:
        if value == candidate:
            return candidate
    raise StorageError(f"stored {what} {value!r} is unknown: expected one of {', '.join(known)}")
