"""``Prepared``: a write statement compiled once binds and refuses values as ``execute`` does."""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.dialects import sqlite

from quantmesh.errors import StorageError
from quantmesh.storage import models, statements
from quantmesh.storage.prepared import Prepared
from quantmesh.storage.statements import upsert

from .support import order


def test_a_statement_of_a_list_of_values_is_refused() -> None:
    keys = statements.ORDER_UPDATE.where(models.orders.c.client_order_id.in_(["a", "b"]))
    with pytest.raises(StorageError, match="positionally"):
        Prepared(sqlite.dialect(), keys)


def test_rows_are_bound_by_their_column_types_and_refused_as_execute_refuses(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'q.db'}")
    models.metadata.create_all(engine)
    columns = ("exchange", *asdict(order()).keys())
    insert = Prepared(
        engine.dialect, upsert("sqlite", models.orders, statements.ORDER_KEY), columns
    )
    rows = [
        {"exchange": "binance", **asdict(order("c1", price="0.1"))},
        {"exchange": "binance", **asdict(order("c2", price="123456789012345678.5"))},
    ]
    with engine.begin() as conn:
        insert.execute_many(conn, rows)
        got = conn.execute(select(models.orders.c.client_order_id, models.orders.c.price))
        stored = {row.client_order_id: row.price for row in got}
    assert stored == {"c1": Decimal("0.1"), "c2": Decimal("123456789012345678.5")}
    refused = {"exchange": "binance", **asdict(order("c3", price="NaN"))}
    with pytest.raises(Exception, match="non-finite"), engine.begin() as conn:
        insert.execute_many(conn, [refused])
    with engine.connect() as conn:
        assert (
            conn.scalar(select(models.orders.c.id).where(models.orders.c.client_order_id == "c3"))
            is None
        )
    engine.dispose()
