"""The repository's SQL statements: unique keys, the dialect's upsert, and the statements
of the hot paths, built once at import.

Parameters are named ``k_*`` for keys and ``v_*`` for new values, so SQLAlchemy's compiled
cache is hit without rebuilding a statement per call. ``upsert`` writes each dialect's
INSERT ... ON CONFLICT (MySQL/MariaDB: ON DUPLICATE KEY UPDATE).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context
from typing import Any, Final

from sqlalchemy import Column, Table, bindparam, false, func, select, true, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from quantmesh.errors import StorageError
from quantmesh.storage import models as m

# Sums of NUMERIC(36, 18) values need more than the default 28 digits to stay exact.
EXACT: Final = Context(prec=m.PRECISION + 20)

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
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert(table) if dialect == "sqlite" else postgresql.insert(table)
        if not update_columns:
            return insert.on_conflict_do_nothing(index_elements=list(keys))
        return insert.on_conflict_do_update(
            index_elements=list(keys),
            set_={column: insert.excluded[column] for column in update_columns},
        )
    if dialect in ("mysql", "mariadb"):
        merge = mysql.insert(table)
        if not update_columns:
            # a no-op assignment; INSERT IGNORE would also hide truncation and bad data
            return merge.on_duplicate_key_update({keys[0]: table.c[keys[0]]})
        return merge.on_duplicate_key_update(
            {column: merge.inserted[column] for column in update_columns}
        )
    raise StorageError(f"no upsert for the {dialect} dialect")


def scoped(table: Table) -> tuple[Any, Any]:
    """``exchange = :k_exchange AND symbol = :k_symbol`` for ``table``."""
    return (
        table.c.exchange == typed("k_exchange", table.c.exchange),
        table.c.symbol == typed("k_symbol", table.c.symbol),
    )


# Statements of the hot paths, built once (parameters: k_* keys, v_* new values).
_o, _t, _g, _lv, _rt = m.orders, m.trades, m.grids, m.grid_levels, m.round_trips

ORDERS_BY_ID: Final = select(_o).where(
    _o.c.exchange == typed("k_exchange", _o.c.exchange),
    _o.c.client_order_id.in_(typed("k_ids", _o.c.client_order_id, expanding=True)),
)
ORDERS_BY_ID_FOR_UPDATE: Final = ORDERS_BY_ID.with_for_update()
ORDER_UPDATE: Final = (
    update(_o)
    .where(
        _o.c.exchange == typed("k_exchange", _o.c.exchange),
        _o.c.client_order_id == typed("k_client_order_id", _o.c.client_order_id),
    )
    .values(
        status=typed("v_status", _o.c.status),
        filled=typed("v_filled", _o.c.filled),
        exchange_order_id=typed("v_exchange_order_id", _o.c.exchange_order_id),
        price=typed("v_price", _o.c.price),
        amount=typed("v_amount", _o.c.amount),
        created_at=typed("v_created_at", _o.c.created_at),
        updated_at=typed("v_updated_at", _o.c.updated_at),
    )
)
LAST_ORDER_TIME: Final = select(func.max(_o.c.created_at)).where(*scoped(_o))
OPEN_ORDERS: Final = (
    select(_o).where(*scoped(_o), _o.c.status == "open").order_by(_o.c.created_at, _o.c.id)
)
# fills whose effect on their level is stored: a fill stored without it is not "known"
APPLIED_TRADE_IDS: Final = select(_t.c.trade_id).where(
    *scoped(_t),
    _t.c.trade_id.in_(typed("k_ids", _t.c.trade_id, expanding=True)),
    _t.c.level_applied == true(),
)
# orders with fills stored without their level, oldest fill first
UNAPPLIED_ORDER_IDS: Final = (
    select(_t.c.client_order_id)
    .where(*scoped(_t), _t.c.level_applied == false())
    .group_by(_t.c.client_order_id)
    .order_by(func.min(_t.c.ts), func.min(_t.c.id))
)
ROUND_TRIPS: Final = select(_rt).where(*scoped(_rt)).order_by(_rt.c.closed_at, _rt.c.id)
GRID_HEAD: Final = select(_g.c.anchor, _g.c.fence, _g.c.spacing, _g.c.interval).where(*scoped(_g))
GRID_FENCE: Final = select(_g.c.fence).where(*scoped(_g))
GRID_SHAPE: Final = (
    update(_g)
    .where(*scoped(_g))
    .values(spacing=typed("v_spacing", _g.c.spacing), interval=typed("v_interval", _g.c.interval))
)
GRID_LEVELS: Final = (
    select(_lv.c.level_index, _lv.c.holding, _lv.c.cost, _lv.c.cycle)
    .where(*scoped(_lv))
    .order_by(_lv.c.level_index)
)
# compare-and-set: store the fence unless a newer one is stored
FENCE_CLAIM: Final = (
    update(_g)
    .where(*scoped(_g), _g.c.fence <= typed("k_fence", _g.c.fence))
    .values(fence=typed("v_fence", _g.c.fence), updated_at=typed("v_updated_at", _g.c.updated_at))
)
LAST_PRICE: Final = (
    update(_g)
    .where(*scoped(_g))
    .values(
        last_price=typed("v_last_price", _g.c.last_price),
        last_price_at=typed("v_last_price_at", _g.c.last_price_at),
    )
)
GRID_HEADS: Final = select(_g.c.exchange, _g.c.symbol, _g.c.last_price, _g.c.last_price_at)
OPEN_COUNTS: Final = (
    select(_o.c.exchange, _o.c.symbol, func.count())
    .where(_o.c.status == "open")
    .group_by(_o.c.exchange, _o.c.symbol)
)
