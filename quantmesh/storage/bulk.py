"""``BulkUpsert``: a batch of rows as the dialect's upsert, in as few driver calls as it takes.

SQLAlchemy's ``executemany`` handles every row's parameters in Python before the driver
sees them, and the drivers then handle each value again; here the caller hands over values
already checked and bound (``rows.Columns``), one sequence per column, and each server gets
the batch in the form it takes fastest:

- PostgreSQL (asyncpg): one ``INSERT ... SELECT`` from ``jsonb_array_elements`` of one
  JSON parameter, an array per row, each value cast to its column's base type, rows in the
  batch's order (``WITH ORDINALITY``), then the upsert's own ``ON CONFLICT`` clause. Decimals
  and floats travel as their exact text (``str``, ``repr``), which ``numeric``/``float8``
  read back to the same value (NaN and infinities included); strings, booleans and integers
  as JSON's own. One text parameter instead of an array per column spares asyncpg its check
  of every array element, the larger part of the write. The casts name the base types
  (``VARCHAR``, ``NUMERIC``): a cast to ``VARCHAR(n)`` would truncate silently, the insert's
  own conversion refuses instead.
- MySQL/MariaDB (aiomysql): the upsert as multi-row ``INSERT ... VALUES (...), (...)``
  statements of up to ``MAX_STATEMENT_CHARS`` characters, as aiomysql's ``executemany``
  writes them, with each value escaped by the driver's own functions - the connection's
  ``escape`` for strings (which knows ``NO_BACKSLASH_ESCAPES``), pymysql's encoder of the
  type otherwise - chosen once per column rather than per value.
- SQLite, and any batch with a value of another type than its column's (a ``None``, an
  ``int`` among strings, a float MySQL cannot hold): the upsert as compiled, with the rows
  to the driver's ``executemany``, which handles (or refuses) such a value as it always did.

A key repeated within one batch must be left out by the caller: PostgreSQL refuses a
``DO UPDATE`` that meets the same row twice in one statement.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from itertools import repeat
from typing import Any, Final

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from quantmesh.errors import StorageError
from quantmesh.storage.statements import upsert

# Characters of one MySQL statement: at most 1,024,000 bytes of UTF-8 (4 bytes a character),
# aiomysql's own limit for the statements of its executemany, well under max_allowed_packet.
MAX_STATEMENT_CHARS: Final = 256_000
_NO_PARAMETERS: Final = {"no_parameters": True}  # the driver leaves a % in a literal alone
_SHOWN_CHARS: Final = 300  # of a failed statement of literals, in its error
_VALUES: Final = re.compile(r"(.+\sVALUES\s*)(\(%s(?:, %s)*\))(.*)", re.DOTALL)
_JSON_KINDS: Final = (str, Decimal, float, bool, int)  # what the JSON rows carry
# a value of these types is read back from its text exactly: Decimal by numeric, float by
# float8 (repr: the shortest text of the same double; 'nan', 'inf' too)
_AS_TEXT: Final[dict[type, Callable[[Any], str]]] = {Decimal: str, float: float.__repr__}


class BulkUpsert:
    """``upsert`` of a batch of rows, the statement compiled once; see the module docstring."""

    def __init__(
        self,
        dialect: Dialect,
        table: Table,
        keys: Sequence[str],
        update_columns: Sequence[str] = (),
        *,
        columns: Sequence[str],
    ) -> None:
        statement = upsert(dialect.name, table, keys, update_columns)
        # as for executemany: no implicit RETURNING of the new row's id
        compiled = statement.compile(
            dialect=dialect, column_keys=list(columns), for_executemany=True
        )
        names = tuple(compiled.positiontup or ())
        if sorted(names) != sorted(columns):
            raise StorageError(f"cannot bind {table.name} columns {names} positionally")
        self.names = names
        self.sql = compiled.string  # executemany of rows: SQLite, and the other values
        self.json_sql: str | None = None
        self._kinds = tuple(_python_type(table.c[name].type) for name in names)
        self._values: tuple[str, str, str] | None = None
        if dialect.name == "postgresql" and dialect.paramstyle == "numeric_dollar":
            self.json_sql = _json_insert(dialect, table, names, compiled.string)
        elif dialect.name in ("mysql", "mariadb") and dialect.paramstyle == "format":
            parts = _VALUES.fullmatch(compiled.string)
            if parts is None:
                raise StorageError(f"no VALUES list in the {table.name} upsert: {self.sql}")
            head, _, tail = parts.groups()
            self._values = (head, "(" + ",".join(["%s"] * len(names)) + ")", tail)

    def execute(self, conn: Connection, columns: Sequence[Sequence[Any]]) -> None:
        """Write the rows whose values ``columns`` holds, a sequence per name of ``names``."""
        if self.json_sql is not None:
            rows = _json_rows(columns, self._kinds)
            if rows is not None:
                conn.exec_driver_sql(self.json_sql, (rows,))
                return
        elif self._values is not None:
            literals = _mysql_columns(conn.connection.driver_connection, columns)
            if literals is not None:
                for statement in _statements(*self._values, literals):
                    _execute_literal(conn, statement)
                return
        conn.exec_driver_sql(self.sql, list(zip(*columns, strict=True)))


def _execute_literal(conn: Connection, statement: str) -> None:
    try:
        conn.exec_driver_sql(statement, execution_options=_NO_PARAMETERS)
    except DBAPIError as exc:  # its message would carry the statement, every row of the batch
        exc.statement = f"{statement[:_SHOWN_CHARS]}... ({len(statement)} characters)"
        raise


def _python_type(type_: Any) -> type | None:
    """The Python type of a column's values, one JSON carries, else ``None``."""
    try:  # a TypeDecorator (ExactDecimal) is read as the type it decorates
        kind = getattr(type_, "impl_instance", type_).python_type
    except NotImplementedError:
        return None
    return kind if kind in _JSON_KINDS else None


def _base_type(compiled: str) -> str:
    """``VARCHAR(64)`` -> ``VARCHAR``, ``NUMERIC(36, 18)`` -> ``NUMERIC``."""
    return re.sub(r"\(.*?\)", "", compiled).strip()


def _json_insert(dialect: Dialect, table: Table, names: Sequence[str], upsert_sql: str) -> str:
    quote = dialect.identifier_preparer.quote
    listed = ", ".join(quote(name) for name in names)
    values = ", ".join(
        f"(r->>{n})::{_base_type(table.c[name].type.compile(dialect=dialect))}"
        for n, name in enumerate(names)
    )
    conflict = upsert_sql[upsert_sql.index(" ON CONFLICT") :]
    return (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({listed}) "
        f"SELECT {values} FROM jsonb_array_elements($1::JSONB) WITH ORDINALITY AS batch(r, _n) "
        f"ORDER BY _n{conflict}"
    )


def _json_rows(columns: Sequence[Sequence[Any]], kinds: Sequence[type | None]) -> str | None:
    """The rows as one JSON array of arrays, or ``None`` when a value is not of its column's
    type (the rows then go the executemany way)."""
    encoded: list[Sequence[Any]] = []
    for column, kind in zip(columns, kinds, strict=True):
        if kind is None or set(map(type, column)) != {kind}:
            return None
        as_text = _AS_TEXT.get(kind)
        encoded.append(column if as_text is None else list(map(as_text, column)))
    # ensure_ascii=False: a string the driver cannot encode (a lone surrogate) fails there,
    # as it always did, rather than reaching the server escaped
    return json.dumps(list(zip(*encoded, strict=True)), ensure_ascii=False, separators=(",", ":"))


def _mysql_columns(driver: Any, columns: Sequence[Sequence[Any]]) -> list[list[str]] | None:
    """The SQL literals of every column (``_mysql_literals``), or ``None`` if one has none."""
    out = []
    for column in columns:
        literals = _mysql_literals(driver, column)
        if literals is None:
            return None
        out.append(literals)
    return out


def _mysql_literals(driver: Any, column: Sequence[Any]) -> list[str] | None:
    """The SQL literals of one column's values as the driver escapes them, or ``None`` when
    the column mixes types or holds a value this does not encode (a float the driver
    refuses: inf, NaN; a type without a scalar encoder)."""
    kinds = set(map(type, column))
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    if kind is str:  # quoted; backslashes as the session's sql_mode reads them
        # each distinct string once: a batch repeats its exchange, symbol, side, currency
        escaped = {value: driver.escape(value) for value in set(column)}
        return list(map(escaped.__getitem__, column))
    encode = _scalar_encoders().get(kind)
    if encode is None or (kind is float and not all(map(math.isfinite, column))):
        return None
    return list(map(encode, column, repeat(None)))


@functools.cache
def _scalar_encoders() -> dict[type, Callable[[Any, Any], str]]:
    """pymysql's encoders of the scalar types, as ``escape_item`` picks them."""
    from pymysql import converters  # here: a configuration without MySQL never loads it

    return {kind: converters.encoders[kind] for kind in (bool, int, float, type(None), Decimal)}


def _statements(head: str, row: str, tail: str, literals: Sequence[Sequence[str]]) -> list[str]:
    """``head`` + rows + ``tail``, each statement at most ``MAX_STATEMENT_CHARS`` long (one
    row at least)."""
    room = MAX_STATEMENT_CHARS - len(head) - len(tail)
    statements: list[str] = []
    chunk: list[str] = []
    size = 0
    for values in map(row.__mod__, zip(*literals, strict=True)):
        if chunk and size + len(values) + 1 > room:
            statements.append(head + ",".join(chunk) + tail)
            chunk, size = [], 0
        chunk.append(values)
        size += len(values) + 1
    if chunk:
        statements.append(head + ",".join(chunk) + tail)
    return statements
