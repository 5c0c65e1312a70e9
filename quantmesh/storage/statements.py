"""The repository's SQL statements: unique keys, the dialect's upsert, the hot paths' queries.

The hot paths' statements are built once at import. Their parameters are named ``k_*``
for keys and ``v_*`` for new values, so SQLAlchemy's compiled cache is hit without
rebuilding a statement per call. ``upsert`` writes each dialect's INSERT ... ON CONFLICT
(MySQL/MariaDB: ON DUPLICATE KEY UPDATE); ``bulk.BulkUpsert`` hands a whole batch of such
rows to the driver at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Column, Table, bindparam, false, func, select, true, update
from sqlalchemy.sql.dml import Insert

from quantmesh.errors import StorageError
from quantmesh.storage import models

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

# Sums of NUMERIC(36, 18) values need more than the default 28 digits to stay exact.
EXACT: Final = Context(prec=models.PRECISION + 20)

ORDER_KEY: Final = ("exchange", "client_order_id")
TRADE_KEY: Final = ("exchange", "symbol", "trade_id")
# a fill stored with its level marks a stored unapplied one applied; nothing else changes
TRADE_APPLIED_VALUES: Final = ("level_applied",)
ROUND_TRIP_KEY: Final = ("exchange", "symbol", "level", "cycle")
GRID_KEY: Final = ("exchange", "symbol")
LEVEL_KEY: Final = ("exchange", "symbol", "level_index")
LEVEL_VALUES: Final = ("holding", "cost", "cycle")


def typed(name: str, column: Column[Any], *, expanding: bool = False) -> Any:
    return bindparam(name, type_=column.type, expanding=expanding)


def upsert(
    dialect: str, table: Table, keys: Sequence[str], update_columns: Sequence[str] = ()
) -> Insert:
    """An INSERT that, on a conflict on the unique ``keys``, updates ``update_columns``
    from the new row - or does nothing when ``update_columns`` is empty.

    Execute it with a list of row dicts (one executemany per batch).
    """
    # each dialect's module imported when its upsert is built: an instance loads its own
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return _on_conflict(sqlite.insert(table), keys, update_columns)
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return _on_conflict(postgresql.insert(table), keys, update_columns)
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql

        merge = mysql.insert(table)
        if not update_columns:
            # a no-op assignment; INSERT IGNORE would also hide truncation and bad data
            return merge.on_duplicate_key_update({keys[0]: table.c[keys[0]]})
        return merge.on_duplicate_key_update(
            {column: merge.inserted[column] for column in update_columns}
        )
    raise StorageError(f"no upsert for the {dialect} dialect")


def _on_conflict(
    insert: SqliteInsert | PgInsert, keys: Sequence[str], update_columns: Sequence[str]
) -> Insert:
    """SQLite's and PostgreSQL's ``ON CONFLICT (keys)``: do nothing, or update the columns."""
    if not update_columns:
        return insert.on_conflict_do_nothing(index_elements=list(keys))
    return insert.on_conflict_do_update(
        index_elements=list(keys),
        set_={column: insert.excluded[column] for column in update_columns},
    )


def scoped(table: Table) -> tuple[Any, Any]:
    """``exchange = :k_exchange AND symbol = :k_symbol`` for ``table``."""
    return (
        table.c.exchange == typed("k_exchange", table.c.exchange),
        table.c.symbol == typed("k_symbol", table.c.symbol),
    )


# Statements of the hot paths, built once (parameters: k_* keys, v_* new values).
_orders = models.orders
_trades = models.trades
_grids = models.grids
_levels = models.grid_levels
_round_trips = models.round_trips

ORDERS_BY_ID: Final = select(_orders).where(
    _orders.c.exchange == typed("k_exchange", _orders.c.exchange),
    _orders.c.client_order_id.in_(typed("k_ids", _orders.c.client_order_id, expanding=True)),
)
ORDERS_BY_ID_FOR_UPDATE: Final = ORDERS_BY_ID.with_for_update()
ORDER_UPDATE: Final = (
    update(_orders)
    .where(
        _orders.c.exchange == typed("k_exchange", _orders.c.exchange),
        _orders.c.client_order_id == typed("k_client_order_id", _orders.c.client_order_id),
    )
    .values(
        status=typed("v_status", _orders.c.status),
        filled=typed("v_filled", _orders.c.filled),
        exchange_order_id=typed("v_exchange_order_id", _orders.c.exchange_order_id),
        price=typed("v_price", _orders.c.price),
        amount=typed("v_amount", _orders.c.amount),
        created_at=typed("v_created_at", _orders.c.created_at),
        updated_at=typed("v_updated_at", _orders.c.updated_at),
    )
)
LAST_ORDER_TIME: Final = select(func.max(_orders.c.created_at)).where(*scoped(_orders))
OPEN_ORDERS: Final = (
    select(_orders)
    .where(*scoped(_orders), _orders.c.status == "open")
    .order_by(_orders.c.created_at, _orders.c.id)
)
# fills whose effect on their level is stored: a fill stored without it is not "known"
APPLIED_TRADE_IDS: Final = select(_trades.c.trade_id).where(
    *scoped(_trades),
    _trades.c.trade_id.in_(typed("k_ids", _trades.c.trade_id, expanding=True)),
    _trades.c.level_applied == true(),
)
# orders with fills stored without their level, oldest fill first
UNAPPLIED_ORDER_IDS: Final = (
    select(_trades.c.client_order_id)
    .where(*scoped(_trades), _trades.c.level_applied == false())
    .group_by(_trades.c.client_order_id)
    .order_by(func.min(_trades.c.ts), func.min(_trades.c.id))
)
ROUND_TRIPS: Final = (
    select(_round_trips)
    .where(*scoped(_round_trips))
    .order_by(_round_trips.c.closed_at, _round_trips.c.id)
)
GRID_HEAD: Final = select(
    _grids.c.anchor, _grids.c.fence, _grids.c.spacing, _grids.c.interval
).where(*scoped(_grids))
GRID_FENCE: Final = select(_grids.c.fence).where(*scoped(_grids))
GRID_SHAPE: Final = (
    update(_grids)
    .where(*scoped(_grids))
    .values(
        spacing=typed("v_spacing", _grids.c.spacing),
        interval=typed("v_interval", _grids.c.interval),
    )
)
GRID_LEVELS: Final = (
    select(_levels.c.level_index, _levels.c.holding, _levels.c.cost, _levels.c.cycle)
    .where(*scoped(_levels))
    .order_by(_levels.c.level_index)
)
# compare-and-set: store the fence unless a newer one is stored
FENCE_CLAIM: Final = (
    update(_grids)
    .where(*scoped(_grids), _grids.c.fence <= typed("k_fence", _grids.c.fence))
    .values(
        fence=typed("v_fence", _grids.c.fence),
        updated_at=typed("v_updated_at", _grids.c.updated_at),
    )
)
LAST_PRICE: Final = (
    update(_grids)
    .where(*scoped(_grids))
    .values(
        last_price=typed("v_last_price", _grids.c.last_price),
        last_price_at=typed("v_last_price_at", _grids.c.last_price_at),
    )
)
GRID_HEADS: Final = select(
    _grids.c.exchange, _grids.c.symbol, _grids.c.last_price, _grids.c.last_price_at
)
OPEN_COUNTS: Final = (
    select(_orders.c.exchange, _orders.c.symbol, func.count())
    .where(_orders.c.status == "open")
    .group_by(_orders.c.exchange, _orders.c.symbol)
)
