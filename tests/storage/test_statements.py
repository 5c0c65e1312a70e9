"""The dialect's upsert, as each dialect compiles it."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Dialect

from quantmesh.errors import StorageError
from quantmesh.storage import models
from quantmesh.storage.statements import upsert

from .support import postgres_dialect


@pytest.mark.parametrize(
    ("dialect", "name", "nothing", "update"),
    [
        (
            SQLiteDialect(),
            "sqlite",
            "ON CONFLICT (exchange, symbol, trade_id) DO NOTHING",
            "DO UPDATE SET holding = excluded.holding",
        ),
        (
            postgres_dialect(),
            "postgresql",
            "ON CONFLICT (exchange, symbol, trade_id) DO NOTHING",
            "DO UPDATE SET holding = excluded.holding",
        ),
        (
            MySQLDialect(),
            "mysql",
            "ON DUPLICATE KEY UPDATE exchange = trades.exchange",
            "ON DUPLICATE KEY UPDATE holding = VALUES(holding)",
        ),
    ],
)
def test_upsert_is_written_for_each_dialect(
    dialect: Dialect, name: str, nothing: str, update: str
) -> None:
    ignore = upsert(name, models.trades, ("exchange", "symbol", "trade_id"))
    assert nothing in str(ignore.compile(dialect=dialect))
    merge = upsert(
        name, models.grid_levels, ("exchange", "symbol", "level_index"), ("holding", "cost")
    )
    assert update in str(merge.compile(dialect=dialect))


def test_upsert_for_an_unknown_dialect_is_an_error() -> None:
    with pytest.raises(StorageError, match="oracle"):
        upsert("oracle", models.trades, ("exchange",))
