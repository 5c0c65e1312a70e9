"""What ``quantmesh export`` reads: trades, round trips and orders as records, filtered by
exchange, symbol and time, oldest first, straight from any of the three databases.

Each record is a dict of the export's columns (``TRADE_COLUMNS``, ...), values as the
database holds them (``Decimal``, ``str``, ``int``; times as Unix seconds): the command
formats them. Decimal columns are never compared or sorted in SQL (see ``models``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Column, Connection, Select, inspect, select

from quantmesh.errors import StorageError
from quantmesh.storage import models

TRADE_COLUMNS: Final = (
    "time", "exchange", "symbol", "side", "price", "amount", "quote_amount", "fee",
    "fee_currency", "trade_id", "order_id", "client_order_id",
)  # fmt: skip
ROUND_TRIP_COLUMNS: Final = (
    "closed_at", "exchange", "symbol", "level", "cycle", "amount", "buy_cost",
    "sell_proceeds", "pnl",
)  # fmt: skip
ORDER_COLUMNS: Final = (
    "created_at", "updated_at", "exchange", "symbol", "side", "price", "amount", "filled",
    "status", "order_id", "client_order_id",
)  # fmt: skip

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExportFilter:
    """Which rows: of ``exchange`` (None: every exchange in the database), of ``symbol``
    (None: all), at or after ``since`` and before ``until`` (Unix seconds; None: open)."""

    exchange: str | None = None
    symbol: str | None = None
    since: float | None = None
    until: float | None = None

    def apply(self, query: Select[Any], table: Any, time: Column[float]) -> Select[Any]:
        if self.exchange is not None:
            query = query.where(table.c.exchange == self.exchange)
        if self.symbol is not None:
            query = query.where(table.c.symbol == self.symbol)
        if self.since is not None:
            query = query.where(time >= self.since)
        if self.until is not None:
            query = query.where(time < self.until)
        return query.order_by(time, table.c.id)


def check_schema(conn: Connection) -> None:
    """Raises ``StorageError`` when the database holds no QuantMesh tables."""
    missing = {"trades", "round_trips", "orders"} - set(inspect(conn).get_table_names())
    if missing:
        raise StorageError(
            f"the database has no {min(missing)} table: it holds no QuantMesh data yet "
            "(check database.dsn; `quantmesh run` or `quantmesh db upgrade` creates the tables)"
        )


# Each export's columns from its table's columns (the export's name: the row's attribute).
_TRADE_FIELDS: Final = {
    "time": "ts", "exchange": "exchange", "symbol": "symbol", "side": "side",
    "price": "price", "amount": "amount", "fee": "fee", "fee_currency": "fee_currency",
    "trade_id": "trade_id", "order_id": "exchange_order_id",
    "client_order_id": "client_order_id",
}  # fmt: skip
_ROUND_TRIP_FIELDS: Final = {name: name for name in ROUND_TRIP_COLUMNS}
_ORDER_FIELDS: Final = {
    **{name: name for name in ORDER_COLUMNS},
    "order_id": "exchange_order_id",
}


def _records(
    conn: Connection, table: Any, time: Column[float], fields: dict[str, str], where: ExportFilter
) -> Iterator[Record]:
    for row in conn.execute(where.apply(select(table), table, time)):
        yield {name: getattr(row, attribute) for name, attribute in fields.items()}


def trades(conn: Connection, where: ExportFilter) -> Iterator[Record]:
    t = models.trades
    for record in _records(conn, t, t.c.ts, _TRADE_FIELDS, where):
        record["quote_amount"] = record["price"] * record["amount"]
        yield record


def round_trips(conn: Connection, where: ExportFilter) -> Iterator[Record]:
    r = models.round_trips
    return _records(conn, r, r.c.closed_at, _ROUND_TRIP_FIELDS, where)


def orders(conn: Connection, where: ExportFilter) -> Iterator[Record]:
    o = models.orders
    return _records(conn, o, o.c.created_at, _ORDER_FIELDS, where)
