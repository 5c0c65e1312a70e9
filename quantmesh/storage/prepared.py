"""``Prepared``: a statement of the write path compiled once and run through the driver.

``Connection.execute`` of a Core statement does, at every call, what does not change from
one call to the next: it looks the compiled form up, builds the parameters' processing
from the bound names and sets up a result for the statement's kind; on a database thread
that is Python holding the interpreter's lock, most of a small transaction's cost.

A ``Prepared`` statement is compiled once for the engine's dialect, positionally, with the
parameter names it is given (``columns``: an ``INSERT`` without ``.values()`` binds the
columns its rows have). ``execute`` binds each value with its column type's own bind
processor - the same function ``execute`` would apply, so what is refused stays refused
(``models.ExactDecimal``) - and hands the statement to ``exec_driver_sql``: the driver's
errors still reach the caller wrapped as SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import BindParameter, UpdateBase

from quantmesh.errors import StorageError


class Prepared:
    """One statement, compiled once; see the module docstring."""

    def __init__(
        self, dialect: Dialect, statement: UpdateBase, columns: Sequence[str] | None = None
    ) -> None:
        compiled = statement.compile(
            dialect=dialect,
            column_keys=None if columns is None else list(columns),
            for_executemany=True,  # as for executemany: no implicit RETURNING
        )
        names = compiled.positiontup
        binds: dict[str, BindParameter[Any]] = getattr(compiled, "binds", {})
        if names is None or any(binds[name].expanding for name in names):
            raise StorageError(f"cannot bind this statement positionally: {compiled.string}")
        self.sql = compiled.string
        self.names = tuple(names)
        self._bind: tuple[tuple[str, Callable[[Any], Any] | None], ...] = tuple(
            (name, binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names
        )

    def _row(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            params[name] if process is None else process(params[name])
            for name, process in self._bind
        )

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> CursorResult[Any]:
        """Run the statement once with ``params`` (a value per name)."""
        return conn.exec_driver_sql(self.sql, self._row(params))

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement for each of ``rows`` (at least one), in one driver call."""
        conn.exec_driver_sql(self.sql, [self._row(row) for row in rows])
