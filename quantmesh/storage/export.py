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


def trades(conn: Connection, where: ExportFilter) -> Iterator[Record]:
    t = models.trades
    for row in conn.execute(where.apply(select(t), t, t.c.ts)):
        yield {
            "time": row.ts,
            "exchange": row.exchange,
            "symbol": row.symbol,
            "side": row.side,
            "price": row.price,
            "amount": row.amount,
            "quote_amount": row.price * row.amount,
            "fee": row.fee,
            "fee_currency": row.fee_currency,
            "trade_id": row.trade_id,
            "order_id": row.exchange_order_id,
            "client_order_id": row.client_order_id,
        }


def round_trips(conn: Connection, where: ExportFilter) -> Iterator[Record]:
    r = models.round_trips
    for row in conn.execute(where.apply(select(r), r, r.c.closed_at)):
        yield {
            "closed_at": row.closed_at,
            "exchange": row.exchange,
            "symbol": row.symbol,
            "level": row.level,
            "cycle": row.cycle,
            "amount": row.amount,
            "buy_cost": row.buy_cost,
            "sell_proceeds": row.sell_proceeds,
            "pnl": row.pnl,
        }


def orders(conn: Connection, where: ExportFilter) -> Iterator[Record]:
    o = models.orders
    for row in conn.execute(where.apply(select(o), o, o.c.created_at)):
        yield {
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "exchange": row.exchange,
            "symbol": row.symbol,
            "side": row.side,
            "price": row.price,
            "amount": row.amount,
            "filled": row.filled,
            "status": row.status,
            "order_id": row.exchange_order_id,
            "client_order_id": row.client_order_id,
        }
