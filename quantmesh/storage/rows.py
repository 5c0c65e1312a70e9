"""Rows to domain objects and back: value checks, the order merge rule, id chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, TypeVar, get_args

from sqlalchemy import Table
from sqlalchemy.engine import Row

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
