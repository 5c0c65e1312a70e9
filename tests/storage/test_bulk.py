"""Bulk writes: ``rows.Columns`` checks and binds a batch a column at a time exactly as
``checked`` and the column types do row by row, and ``bulk.BulkUpsert`` hands it to
the driver as the dialect's upsert."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.dialects.mysql.aiomysql import MySQLDialect_aiomysql
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Dialect

from quantmesh.domain import Fill
from quantmesh.errors import StorageRejected
from quantmesh.storage import models
from quantmesh.storage.base import TradeFilter
from quantmesh.storage.bulk import (
    MAX_STATEMENT_CHARS,
    BulkUpsert,
    _json_rows,
    _mysql_literals,
    _statements,
)
from quantmesh.storage.repository import SqlRepository
from quantmesh.storage.rows import Columns, _decimals_fit, checked
from quantmesh.storage.statements import TRADE_APPLIED_VALUES, TRADE_KEY, upsert

from .support import SYMBOL, fill

NAMES = (
    *("exchange", "trade_id", "symbol", "side", "price", "amount", "fee", "fee_currency"),
    *("client_order_id", "exchange_order_id", "ts", "level_applied"),
)


def dialects() -> list[Dialect]:
    return [
        PGDialect_asyncpg(),  # type: ignore[no-untyped-call]  # sqlalchemy leaves it untyped
        MySQLDialect_aiomysql(),
        SQLiteDialect_pysqlite(),
        SQLiteDialect_aiosqlite(),
    ]


def fits(value: Any) -> bool:
    try:
        models.check_decimal(value)
    except (ValueError, TypeError):
        return False
    return True


# --- the column-wide decimal check -----------------------------------------------------------

EDGES = [
    "0",
    "-0",
    "1999.5",
    "0.000000000000000001",  # 18 places
    "-0.000000000000000123",
    "999999999999999999.999999999999999999",  # the largest NUMERIC(36, 18)
    "123456789012345678.123456789012345678",
    "1E+17",
    "1.500000000000000000000",  # 21 places written, all zeros past the 18th: fits
    "0E+30",  # zero written with a large exponent: fits
    "0.0000000000000000001",  # 19 places
    "1000000000000000000",  # 10**18
    "-1000000000000000000.5",
    "1E+40",
    "1E-40",
    "NaN",
    "-Infinity",
    "sNaN",
]


@pytest.mark.parametrize("edge", EDGES)
def test_a_column_shown_to_fit_holds_only_values_check_decimal_accepts(edge: str) -> None:
    value = Decimal(edge)
    for column in ([value], [Decimal("1.5"), value], [value, Decimal(-7), value]):
        if _decimals_fit(column):
            assert all(fits(v) for v in column), column


@pytest.mark.parametrize(
    ("column", "shown"),
    [
        (["1999.5", "0.05", "-0.000000000000000001", "0"], True),
        (["999999999999999999.999999999999999999", "-999999999999999999"], True),
        (["0.5", "-0.5"], True),  # the sum cancels: its exponent is still the smallest
        (["1", "0.0000000000000000001"], False),
        (["1", "1000000000000000000"], False),
        (["1", "NaN"], False),
        (["Infinity"], False),
        (["1", "sNaN"], False),
        (["1", "1E-200"], False),  # the exact sum would need more digits than it keeps
    ],
)
def test_the_column_check_shows_ordinary_columns_and_refers_the_rest(
    column: list[str], shown: bool
) -> None:
    assert _decimals_fit([Decimal(v) for v in column]) is shown


@pytest.mark.parametrize("other", [1.5, 3, "1.5", None])
def test_a_column_holding_anything_but_decimals_is_not_shown_to_fit(other: object) -> None:
    assert not _decimals_fit([Decimal("1.5"), other])


def test_random_columns_are_shown_to_fit_exactly_when_every_value_is_plainly_written() -> None:
    rng = random.Random(19)
    for _ in range(2_000):
        column = [
            Decimal(rng.randrange(-(10**38), 10**38)).scaleb(-rng.randrange(0, 24))
            for _ in range(rng.randrange(1, 6))
        ]
        plain = all(v.as_tuple().exponent >= -18 and v.adjusted() < 18 for v in column)  # type: ignore[operator]
        assert _decimals_fit(column) is plain, column
        if plain:
            assert all(fits(v) for v in column)


# --- columns: the same checks and bound values as row by row ----------------------------------


def fills_with_edges() -> list[Fill]:
    base = [fill(f"t{n}", price=str(1999 + n), ts=1000.0 + n) for n in range(5)]
    return [
        *base,
        fill("t-big", price="999999999999999999.999999999999999999", fee="-0.000000000000000123"),
        fill("t-zeros", amount="1.500000000000000000000"),  # shown by the value-by-value path
        fill("t-zero", fee="0E+30"),
    ]


@pytest.mark.parametrize("dialect", dialects(), ids=lambda d: f"{d.name}+{d.driver}")
@pytest.mark.parametrize(
    "fills", [fills_with_edges(), fills_with_edges()[:5]], ids=["edges", "plain"]
)
def test_columns_bind_every_value_as_its_column_type_does(
    dialect: Dialect, fills: list[Fill]
) -> None:
    columns = Columns(dialect, models.trades, Fill, NAMES)
    constants = {"exchange": "binance", "level_applied": True}
    got = columns.values(fills, constants)
    assert len(got) == len(NAMES)
    for name, values in zip(NAMES, got, strict=True):
        process = models.trades.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        raw = [constants[name] if name in constants else getattr(f, name) for f in fills]
        expected = raw if process is None else [process(v) for v in raw]
        assert list(values) == expected, name
        assert [type(v) for v in values] == [type(v) for v in expected], name


@pytest.mark.parametrize(
    "bad",
    [
        {"trade_id": "x" * (models.ID_LEN + 1)},
        {"fee_currency": "Y" * (models.CURRENCY_LEN + 1)},
        {"price": Decimal("0.0000000000000000001")},
        {"amount": Decimal(1000000000000000000)},
        {"fee": Decimal("NaN")},
    ],
)
def test_columns_refuse_a_batch_as_checked_refuses_its_row(bad: dict[str, Any]) -> None:
    fills = [fill("t1"), replace(fill("t2"), **bad), fill("t3")]
    row = {"exchange": "binance", **{k: getattr(fills[1], k) for k in NAMES[1:-1]}}
    with pytest.raises(StorageRejected) as by_row:
        checked(models.trades, row)
    columns = Columns(PGDialect_asyncpg(), models.trades, Fill, NAMES)  # type: ignore[no-untyped-call]
    with pytest.raises(StorageRejected) as by_column:
        columns.values(fills, {"exchange": "binance", "level_applied": False})
    assert str(by_column.value) == str(by_row.value)


def test_columns_refuse_an_overlong_constant() -> None:
    columns = Columns(SQLiteDialect_pysqlite(), models.trades, Fill, NAMES)
    with pytest.raises(StorageRejected, match="exchange"):
        columns.values([fill()], {"exchange": "e" * 33, "level_applied": False})


# --- the statements ---------------------------------------------------------------------------


def test_postgresql_bulk_upsert_is_one_insert_from_json_rows_with_the_upserts_conflict_clause() -> (
    None
):
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    for update in ((), TRADE_APPLIED_VALUES):
        bulk = BulkUpsert(dialect, models.trades, TRADE_KEY, update, columns=NAMES)
        statement = upsert("postgresql", models.trades, TRADE_KEY, update)
        conflict = str(statement.compile(dialect=dialect))
        conflict = conflict[conflict.index(" ON CONFLICT") :]
        sql = bulk.json_sql
        assert sql is not None
        assert sql.startswith("INSERT INTO trades (" + ", ".join(bulk.names) + ") SELECT (r->>0)::")
        assert "(r->>4)::NUMERIC, " in sql  # no typmod: a cast to VARCHAR(n) would truncate
        assert "(" not in sql[sql.index("SELECT") : sql.index(" FROM")].replace("(r->>", "")
        assert sql.endswith("FROM jsonb_array_elements($1::JSONB) WITH ORDINALITY AS batch(r, _n) "
                            "ORDER BY _n" + conflict)  # fmt: skip
        assert "RETURNING" not in sql
        # the other values: the upsert for executemany
        executemany = statement.compile(
            dialect=dialect, column_keys=list(NAMES), for_executemany=True
        )
        assert bulk.sql == str(executemany)
        assert "RETURNING" not in bulk.sql


@pytest.mark.parametrize("dialect", dialects()[1:], ids=lambda d: f"{d.name}+{d.driver}")
def test_other_dialects_bulk_upsert_is_the_upsert_for_executemany(dialect: Dialect) -> None:
    bulk = BulkUpsert(dialect, models.trades, TRADE_KEY, TRADE_APPLIED_VALUES, columns=NAMES)
    statement = upsert(dialect.name, models.trades, TRADE_KEY, TRADE_APPLIED_VALUES)
    assert bulk.sql == str(statement.compile(dialect=dialect, column_keys=list(NAMES)))
    assert sorted(bulk.names) == sorted(NAMES)
    assert bulk.json_sql is None


# --- the encodings ----------------------------------------------------------------------------

KINDS = (str, Decimal, float, bool)


def test_json_rows_carry_decimals_and_floats_as_their_exact_text() -> None:
    columns: list[list[Any]] = [
        ["a", 'quo"te\\', "🚀"],
        [Decimal("1E+17"), Decimal("-0.000000000000000001"), Decimal("0E+30")],
        [0.1, float("nan"), -0.0],
        [True, False, True],
    ]
    rows = json.loads(_json_rows(columns, KINDS) or "")
    assert rows == [
        ["a", "1E+17", "0.1", True],
        ['quo"te\\', "-1E-18", "nan", False],
        ["🚀", "0E+30", "-0.0", True],
    ]


@pytest.mark.parametrize(
    "odd",
    [
        [["a", 5], [Decimal(1)] * 2, [0.5] * 2, [True] * 2],  # an int among strings
        [["a", None], [Decimal(1)] * 2, [0.5] * 2, [True] * 2],
        [["a"] * 2, [Decimal(1), 1.5], [0.5] * 2, [True] * 2],
        [["a"] * 2, [Decimal(1)] * 2, [0.5, True], [True] * 2],
        [["a"] * 2, [Decimal(1)] * 2, [0.5] * 2, [True, 1]],
    ],
)
def test_a_value_not_of_its_columns_type_sends_the_batch_the_executemany_way(
    odd: list[list[Any]],
) -> None:
    assert _json_rows(odd, KINDS) is None
    assert _json_rows(odd, (None, *KINDS[1:])) is None


class _Driver:
    """What ``_mysql_literals`` asks of an aiomysql connection."""

    def escape(self, value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.mark.parametrize(
    ("column", "literals"),
    [
        (["it's", "a\\b"], ["'it\\'s'", "'a\\\\b'"]),
        ([Decimal("1E+17"), Decimal("-0.5")], ["100000000000000000", "-0.5"]),
        ([0.1, 1e300, -0.0], ["0.1e0", "1e+300", "-0.0e0"]),
        ([True, False], ["1", "0"]),
        ([7, -1], ["7", "-1"]),
    ],
)
def test_mysql_literals_are_the_drivers_own(column: list[Any], literals: list[str]) -> None:
    assert _mysql_literals(_Driver(), column) == literals


@pytest.mark.parametrize(
    "column", [["a", 1], [1.5, float("inf")], [float("nan")], [b"bytes"], [[1, 2]], ["a", None]]
)
def test_mysql_columns_the_literals_do_not_carry(column: list[Any]) -> None:
    assert _mysql_literals(_Driver(), column) is None


@pytest.mark.parametrize("rows", [1, 2, 399, 4000, 12000])
def test_long_batches_are_split_into_statements_of_at_most_the_limit(rows: int) -> None:
    literals = [[f"'{n:0{n % 97 + 1}d}'" for n in range(rows)], [str(n) for n in range(rows)]]
    head, tail = "INSERT INTO t (a, b) VALUES ", " ON DUPLICATE KEY UPDATE a = t.a"
    statements = _statements(head, "(%s,%s)", tail, literals)
    assert all(len(s) <= MAX_STATEMENT_CHARS for s in statements)
    assert all(s.startswith(head) and s.endswith(tail) for s in statements)
    values = [s[len(head) : -len(tail)] for s in statements]
    assert ",".join(values) == ",".join(f"({a},{b})" for a, b in zip(*literals, strict=True))
    for full, following in zip(statements, values[1:], strict=False):  # each as full as it can
        assert len(full) + len(following.split("),(")[0]) + 2 > MAX_STATEMENT_CHARS
    assert len(statements) == (1 if rows < 4000 else math.ceil(rows * 56 / MAX_STATEMENT_CHARS))


# --- through the database ---------------------------------------------------------------------


async def test_a_batch_with_one_refused_fill_stores_none_of_it(repo: SqlRepository) -> None:
    batch = [fill(f"t{n}") for n in range(10)]
    batch[7] = fill("t7", price="0.0000000000000000001")
    with pytest.raises(StorageRejected, match="price"):
        await repo.save_fills(batch)
    batch[7] = fill("x" * 65)
    with pytest.raises(StorageRejected, match="trade_id"):
        assert not await repo.record_batch(SYMBOL, [], batch, [], [], None)
    assert await repo.get_trades(TradeFilter()) == []


async def test_a_large_batch_is_stored_exactly_and_in_its_order(repo: SqlRepository) -> None:
    batch = [
        fill(f"t{n}", price=str(n), amount="0.000000000000000001", ts=5.0) for n in range(1200)
    ]
    batch[3] = fill("t3", price="1.500000000000000000000", fee="0E+30", ts=5.0)
    await repo.save_fills(batch)
    stored = await repo.get_trades(TradeFilter(limit=2000))
    assert [t.trade_id for t in stored] == [f.trade_id for f in batch]  # ties: insertion order
    assert stored == batch  # decimals compare by value: 1.5, 0
    assert await repo.unapplied_order_ids(SYMBOL) == ["c1"]
