"""The schema and the exact decimal column type."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable

from quantmesh.storage import models
from quantmesh.storage.models import ExactDecimal, check_decimal
from quantmesh.storage.repository import SqlRepository

from .conftest import SQLITE_ONLY
from .support import order, postgres_dialect


@pytest.mark.parametrize(
    "value",
    ["0", "-0.000000000000000001", "999999999999999999.999999999999999999", "1E+5", "0.30"],
)
def test_check_decimal_accepts_what_numeric_36_18_holds(value: str) -> None:
    assert check_decimal(Decimal(value)) == Decimal(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0.0000000000000000001", "more than 18 decimal places"),
        ("1000000000000000000", "does not fit"),
        ("-1E+30", "does not fit"),
        ("1E+100", "does not fit"),
        ("NaN", "non-finite"),
        ("-Infinity", "non-finite"),
    ],
)
def test_check_decimal_refuses_what_numeric_36_18_cannot_hold(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_decimal(Decimal(value))


def test_check_decimal_refuses_floats() -> None:
    with pytest.raises(TypeError, match="float"):
        check_decimal(0.1)  # type: ignore[arg-type]


def test_exact_decimal_is_text_on_sqlite_and_numeric_elsewhere() -> None:
    column = ExactDecimal()
    sqlite_dialect, pg = SQLiteDialect(), postgres_dialect()
    assert str(column.dialect_impl(sqlite_dialect).compile(dialect=sqlite_dialect)) == "VARCHAR(40)"
    assert str(column.dialect_impl(pg).compile(dialect=pg)) == "NUMERIC(36, 18)"
    assert column.process_bind_param(Decimal("1E+2"), sqlite_dialect) == "100"
    assert column.process_bind_param(Decimal("0.3"), pg) == Decimal("0.3")
    assert column.process_result_value("0.300", sqlite_dialect) == Decimal("0.3")
    assert column.process_result_value(None, pg) is None


@pytest.mark.parametrize("dialect", [SQLiteDialect(), postgres_dialect(), MySQLDialect()])
def test_schema_compiles_for_every_backend(dialect: Dialect) -> None:
    for table in models.metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        # every table but the leases, whose names carry the exchange
        assert "exchange VARCHAR(32)" in ddl or table is models.lock_leases
    mysql_ddl = str(CreateTable(models.grids).compile(dialect=MySQLDialect()))
    assert "fence BIGINT" in mysql_ddl


@SQLITE_ONLY
async def test_sqlite_stores_the_exact_decimal_text(repo: SqlRepository) -> None:
    await repo.save_order(order(price=str(Decimal("0.1") + Decimal("0.2")), amount="1E+2"))
    query = text("SELECT price, amount, typeof(price) FROM orders")
    row = await repo._runner.run("read", lambda conn: conn.execute(query).one(), write=False)
    assert tuple(row) == ("0.3", "100", "text")
