"""Rows to domain objects and back: value checks, the order merge rule, id chunks, and the
columns of a bulk write (``Columns``)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import fields, replace
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from functools import reduce
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final, TypeVar, get_args

from sqlalchemy import Table
from sqlalchemy.engine import Dialect, Row

from quantmesh.domain import CLOSED_STATUSES, Order, OrderStatus, Side
from quantmesh.errors import StorageError, StorageRejected
from quantmesh.storage import models

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")

_IN_CHUNK: Final = 500  # ids per IN (...) list; stays under every backend's bind limit
_SIDES: Final = frozenset(get_args(Side))
_STATUSES: Final = frozenset(get_args(OrderStatus))


def merge_order(stored: Order, incoming: Order) -> Order:
    """The stored order after applying ``incoming``, a possibly late or stale update.

    A closed order never goes back to open, ``filled`` never decreases, a known exchange
    order id is kept when the update has none; symbol, side, price, amount and
    ``created_at`` are fixed by the first write.

    A client order id may be used again once its order closed (a buy cancelled before any
    fill is placed again with the same id): an update with another exchange order id is
    another order, and the one placed later is the one the row describes.
    """
    if (
        incoming.exchange_order_id
        and stored.exchange_order_id
        and incoming.exchange_order_id != stored.exchange_order_id
    ):
        return incoming if incoming.created_at > stored.created_at else stored
    status = incoming.status
    if stored.status in CLOSED_STATUSES and status == "open":
        status = stored.status
    return replace(
        stored,
        status=status,
        filled=max(stored.filled, incoming.filled),
        exchange_order_id=incoming.exchange_order_id or stored.exchange_order_id,
        updated_at=max(stored.updated_at, incoming.updated_at),
    )


def checked(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """Refuse values a column cannot hold, alike on every backend (MySQL would truncate)."""
    for key, value in row.items():
        if isinstance(value, str):
            length = getattr(table.c[key].type, "length", None)
            if length is not None and len(value) > length:
                raise StorageRejected(
                    f"{table.name}.{key} is longer than {length} characters: {value[:80]!r}"
                )
        elif isinstance(value, Decimal):
            try:
                models.check_decimal(value)
            except ValueError as exc:
                raise StorageRejected(f"{table.name}.{key}: {exc}") from None
    return row


def _side(value: str) -> Side:
    if value not in _SIDES:
        raise StorageError(f"stored side {value!r} is not buy or sell")
    return value  # type: ignore[return-value]  # narrowed by the membership test


def _status(value: str) -> OrderStatus:
    if value not in _STATUSES:
        raise StorageError(f"stored order status {value!r} is unknown")
    return value  # type: ignore[return-value]  # narrowed by the membership test


def from_row(cls: type[_T], row: Row[Any]) -> _T:
    """Build the domain object whose fields are columns of ``row`` (same names)."""
    mapping = row._mapping
    values = {f.name: mapping[f.name] for f in fields(cls)}
    if "side" in values:
        values["side"] = _side(values["side"])
    if "status" in values:
        values["status"] = _status(values["status"])
    return cls(**values)


def chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[start : start + _IN_CHUNK]) for start in range(0, len(ids), _IN_CHUNK)]


# Sums decimals exactly or raises: a column's sum then has the smallest exponent of its values.
_EXACT_SUM: Final = Context(
    prec=100, traps=[InvalidOperation, Inexact, Rounded, Overflow, DivisionByZero]
)


def _decimals_fit(values: Sequence[Any]) -> bool:
    """Whether every value is a finite ``Decimal`` that ``NUMERIC(36, 18)`` holds exactly,
    as ``models.check_decimal`` would say, by two passes over the column in C: each value
    below 10**18 in magnitude (``adjusted() < 18``, which also refuses anything but a
    ``Decimal``), and at most 18 decimal places as written (the exponent of their exact
    sum, the smallest of theirs, at least -18). Such values quantize to 18 places without
    rounding. ``False`` says only "not shown here" (NaN, a sum that would round,
    ``1.5000000000000000000000`` with its zeros): check each value then."""
    try:
        if max(map(Decimal.adjusted, values)) >= models.PRECISION - models.SCALE:
            return False
        exponent = reduce(_EXACT_SUM.add, values).as_tuple().exponent
    except (TypeError, ArithmeticError):  # not a Decimal; NaN, infinities, would round
        return False
    return isinstance(exponent, int) and exponent >= -models.SCALE


def _strings_fit(values: Sequence[Any], length: int) -> bool:
    """Whether every value is at most ``length`` long; ``False``: check each value."""
    try:
        return max(map(len, values)) <= length
    except TypeError:  # a value without a length (None): ``checked`` leaves those alone
        return False


class Columns:
    """Objects of one dataclass as one sequence of values per column of ``table``, ready
    for the driver: a bulk write's parameters (``statements.BulkUpsert``).

    ``names`` are the columns in the statement's order; each is a field of ``cls`` or one
    of the ``constants`` given per batch (``exchange``). The values are refused as
    ``checked`` refuses a row (``StorageRejected``, same message) and bound as the column
    types bind them on ``dialect``. Both are done a column at a time: the string lengths
    and exact decimals of a whole column are shown in C, and only a column that cannot be
    shown so is checked and bound value by value, through ``checked`` and the type's own
    bind processor. A decimal shown to fit is bound as ``models.ExactDecimal`` binds it
    (text on SQLite) without checking it again.
    """

    def __init__(self, dialect: Dialect, table: Table, cls: type, names: Sequence[str]) -> None:
        self._table = table
        self._fields = tuple(f.name for f in fields(cls))
        if len(self._fields) < 2 or not set(self._fields) <= set(names):
            raise ValueError(f"{cls.__name__} does not fill {table.name}")
        self._get = operator.attrgetter(*self._fields)  # a tuple per object, in C
        self._names = tuple(names)
        self._process = {
            name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        }
        self._lengths = {
            name: length
            for name in self._fields
            if (length := getattr(table.c[name].type, "length", None)) is not None
        }
        self._decimals = frozenset(
            name for name in self._fields if isinstance(table.c[name].type, models.ExactDecimal)
        )
        self._decimal_text = dialect.name == "sqlite"  # as ExactDecimal binds there

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def values(self, objs: Sequence[Any], constants: dict[str, Any]) -> list[Sequence[Any]]:
        """The values of ``objs`` (at least one), a sequence per column of ``names``."""
        count = len(objs)
        checked(self._table, dict(constants))
        by_field = dict(zip(self._fields, zip(*map(self._get, objs), strict=True), strict=True))
        shown = {
            name
            for name, column in by_field.items()
            if (name in self._lengths and _strings_fit(column, self._lengths[name]))
            or (name in self._decimals and _decimals_fit(column))
        }
        if any(n not in shown for n in self._lengths.keys() | self._decimals):
            for obj in objs:  # refuse as a row would be refused
                row = {name: getattr(obj, name) for name in self._fields}
                checked(self._table, {**constants, **row})
        out: list[Sequence[Any]] = []
        for name in self._names:
            process = self._process[name]
            if name in constants:
                value = constants[name]
                out.append([value if process is None else process(value)] * count)
            elif process is None:
                out.append(by_field[name])
            elif name in self._decimals and name in shown:
                column = by_field[name]
                out.append(list(map(format, column, repeat("f"))) if self._decimal_text else column)
            else:
                out.append(list(map(process, by_field[name])))
        return out
