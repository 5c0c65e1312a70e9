"""Batches of fills through a real database: what a batch stores, exactly, on every backend.

The bulk path hands the driver values it encodes itself (JSON on PostgreSQL, escaped
literals on MySQL/MariaDB), so every kind of value is read back here as it was given:
strings the encodings treat specially, decimals at the edges of ``NUMERIC(36, 18)``,
floats at the edges of a double, and batches past the size one statement carries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.domain import Fill
from quantmesh.errors import StorageError, StorageRejected
from quantmesh.storage import bulk, models
from quantmesh.storage.base import TradeFilter
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository
from tests.support import FakeClock

from .conftest import Backend
from .support import SYMBOL, fill

STRINGS = [
    "plain",
    "it's",
    "''",
    '"quoted"',
    "back\\slash",
    "\\",
    "ends with \\",
    "\\'; DROP TABLE trades; --",
    "%s",
    "%(name)s %% 100%",
    "$1::text",
    "{}[]:,",
    "line\nbreak\ttab\rreturn",
    "\x1a\x08\x7f",
    "café 中文 🚀",
    "null",
    "true",
    "",
]

DECIMALS = [
    "0",
    "-0",
    "0E+30",
    "0E-40",
    "1E+17",
    "-1.23E-16",
    "0.000000000000000001",
    "-0.000000000000000001",
    "999999999999999999.999999999999999999",
    "-999999999999999999.999999999999999999",
    "123456789012345678.123456789012345678",
    "1.500000000000000000000",
    "1999.50",
    "0.1",
]

FLOATS = [
    0.0,
    -0.0,
    0.1,
    1 / 3,
    1700000000.123456,
    -1700000000.5,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -1e300,
    1e16,
    123456789.0,
]


def _stored(got: list[Fill]) -> dict[str, Fill]:
    return {trade.trade_id: trade for trade in got}


def _same_float(a: float, b: float) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


async def test_strings_are_stored_exactly(repo: SqlRepository) -> None:
    batch = [
        replace(
            fill(f"s{n}"),
            symbol=SYMBOL,
            fee_currency=value[: models.CURRENCY_LEN],
            client_order_id=value,
            exchange_order_id=value[::-1],
        )
        for n, value in enumerate(STRINGS)
    ]
    batch.append(fill("it's \\ %s 🚀"))  # a key itself
    await repo.save_fills(batch)
    assert await repo.get_trades(TradeFilter(limit=100)) == batch


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
async def test_strings_are_stored_exactly_without_backslash_escapes(
    backend: Backend, clock: FakeClock
) -> None:
    """MySQL/MariaDB's ``NO_BACKSLASH_ESCAPES`` mode reads a backslash as itself: a literal
    escaped for the other mode would store the wrong text, or end early."""
    engine = create_engine_for(backend.db_type, backend.url)

    def no_backslash_escapes(dbapi: Any, _record: Any) -> None:
        cursor = dbapi.cursor()
        cursor.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        cursor.close()

    assert isinstance(engine, AsyncEngine)
    event.listen(engine.sync_engine, "connect", no_backslash_escapes)
    repo = SqlRepository(engine, "binance", clock=clock)
    await repo.start()
    try:
        batch = [replace(fill(f"s{n}"), client_order_id=v) for n, v in enumerate(STRINGS)]
        await repo.save_fills(batch)
        assert await repo.get_trades(TradeFilter(limit=100)) == batch
        modes = await repo.runner.run(
            "mode", lambda conn: str(conn.scalar(text("SELECT @@sql_mode"))), write=False
        )
        assert "NO_BACKSLASH_ESCAPES" in modes
    finally:
        await repo.close()


async def test_decimals_at_the_edges_are_stored_exactly(repo: SqlRepository) -> None:
    batch = [
        fill(f"d{n}", price=value, amount=DECIMALS[-1 - n], fee=value)
        for n, value in enumerate(DECIMALS)
    ]
    await repo.save_fills(batch)
    stored = await repo.get_trades(TradeFilter(limit=100))
    assert stored == batch  # by value: 0E+30 is 0, 1999.50 is 1999.5
    for got, given in zip(stored, batch, strict=True):
        assert [got.price, got.amount, got.fee] == [given.price, given.amount, given.fee]
        assert all(isinstance(v, Decimal) for v in (got.price, got.amount, got.fee))


async def test_floats_at_the_edges_are_stored_exactly(repo: SqlRepository) -> None:
    batch = [fill(f"f{n}", ts=value) for n, value in enumerate(FLOATS)]
    await repo.save_fills(batch)
    stored = _stored(await repo.get_trades(TradeFilter(limit=100)))
    for given in batch:
        assert stored[given.trade_id].ts == given.ts, given
        if given.ts == 0.0 and repo.runner.dialect == "postgresql":  # the sign of zero too
            assert _same_float(stored[given.trade_id].ts, given.ts), given


async def test_a_trade_twice_in_a_batch_and_one_stored_before_are_each_stored_once(
    repo: SqlRepository,
) -> None:
    await repo.save_fills([fill("t-old", price="1", ts=1.0)])
    batch = [
        fill("t1", price="2", ts=2.0),
        fill("t-old", price="3", ts=3.0),  # stored before: left as it is
        fill("t1", price="4", ts=4.0),  # twice in the batch: the first one counts
        fill("t2", price="5", ts=5.0),
    ]
    await repo.save_fills(batch)
    await repo.save_fills(batch)  # the whole batch again: nothing changes
    assert await repo.get_trades(TradeFilter()) == [
        fill("t-old", price="1", ts=1.0),
        fill("t1", price="2", ts=2.0),
        fill("t2", price="5", ts=5.0),
    ]
    assert await repo.known_trade_ids(SYMBOL, ["t-old", "t1", "t2"]) == set()


async def test_a_batch_with_its_levels_applies_a_trade_stored_without_them_once(
    repo: SqlRepository,
) -> None:
    await repo.init_grid(SYMBOL, Decimal(100))
    await repo.save_fills([fill("t1", price="1")])  # stored unapplied
    batch = [fill("t1", price="9"), fill("t2"), fill("t2", price="9")]
    assert await repo.record_batch(SYMBOL, [], batch, [], [], fence=1)
    assert await repo.known_trade_ids(SYMBOL, ["t1", "t2"]) == {"t1", "t2"}
    assert [(t.trade_id, t.price) for t in await repo.get_trades(TradeFilter())] == [
        ("t1", Decimal(1)),
        ("t2", Decimal(100)),
    ]


@pytest.fixture
def statements(repo: SqlRepository) -> Iterator[list[tuple[str, Any]]]:
    """The statements the repository's engine sends, with their parameters."""
    sent: list[tuple[str, Any]] = []
    engine: Any = repo._engine
    sync = getattr(engine, "sync_engine", engine)

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(sync, "before_cursor_execute", record)
    yield sent
    event.remove(sync, "before_cursor_execute", record)


def _long_fills(count: int) -> Iterator[Fill]:
    """Fills as long as the columns hold, in characters of four UTF-8 bytes each."""
    wide = "🚀" * (models.ID_LEN - 12)
    for n in range(count):
        yield replace(
            fill(f"{n:06d}{wide}"[: models.ID_LEN], ts=float(n)),
            fee_currency="🚀" * models.CURRENCY_LEN,
            client_order_id=f"c{n:05d}{wide}"[: models.ID_LEN],
            exchange_order_id=f"x{n:05d}{wide}"[: models.ID_LEN],
        )


async def test_a_batch_longer_than_one_statement_is_stored_whole_and_in_order(
    repo: SqlRepository, statements: list[tuple[str, Any]]
) -> None:
    count = 2 * bulk.MAX_STATEMENT_CHARS // 400 + 7
    batch = list(_long_fills(count))
    await repo.save_fills(batch)
    inserts = [sql for sql, _ in statements if "INSERT INTO trades" in sql]
    assert len(inserts) == (2 if repo.runner.dialect == "mysql" else 1)
    stored = await repo.get_trades(TradeFilter(limit=count + 1))
    assert [t.trade_id for t in stored] == [f.trade_id for f in batch]
    assert stored == batch


async def test_a_row_the_server_refuses_late_in_a_long_batch_stores_none_of_it(
    repo: SqlRepository,
) -> None:
    """The statements of one batch are one transaction: a row that fails in the last one
    (NOT NULL) takes the rows of the first ones back with it."""
    batch = list(_long_fills(2 * bulk.MAX_STATEMENT_CHARS // 400 + 7))
    batch[-1] = replace(batch[-1], exchange_order_id=None)  # type: ignore[arg-type]
    with pytest.raises(StorageRejected, match="exchange_order_id"):
        await repo.save_fills(batch)
    assert await repo.get_trades(TradeFilter()) == []


async def test_a_batch_of_fills_is_one_statement_on_a_server(
    repo: SqlRepository, statements: list[tuple[str, Any]]
) -> None:
    """The batch goes the bulk way: one JSON parameter on PostgreSQL, one statement of
    literals on MySQL/MariaDB (no parameters), an executemany on SQLite."""
    batch = [fill(f"t{n}", price=f"{n}.5", ts=float(n)) for n in range(500)]
    await repo.save_fills(batch)
    inserts = [(sql, params) for sql, params in statements if "INSERT INTO trades" in sql]
    assert len(inserts) == 1
    sql, params = inserts[0]
    dialect = repo.runner.dialect
    if dialect == "postgresql":
        assert "jsonb_array_elements" in sql and len(params) == 1
    elif dialect == "mysql":
        assert "'t499'" in sql and not params
    else:
        assert len(params) == 500
    assert await repo.get_trades(TradeFilter(limit=1000)) == batch


async def test_a_value_of_another_type_goes_the_executemany_way_as_before(
    repo: SqlRepository, statements: list[tuple[str, Any]]
) -> None:
    """A time given as a bool is stored as 1.0 by every driver; the batch it is in goes
    the executemany way (whatever the driver did with such a value, it still does)."""
    batch = [fill("t1"), replace(fill("t2"), ts=True)]
    await repo.save_fills(batch)
    stored = await repo.get_trades(TradeFilter())
    assert {t.trade_id: t.ts for t in stored} == {"t1": 1000.0, "t2": 1.0}
    inserts = [params for sql, params in statements if "INSERT INTO trades" in sql]
    assert [len(params) for params in inserts] == [2]


async def test_times_that_are_no_number_are_stored_or_refused_as_each_driver_does(
    repo: SqlRepository,
) -> None:
    """NaN and the infinities: PostgreSQL stores them; pymysql refuses them, so none of the
    batch is stored on MySQL/MariaDB; SQLite stores the infinities, and NaN as NULL, which
    the column refuses."""
    dialect = repo.runner.dialect
    for n, ts in enumerate([float("inf"), float("-inf"), float("nan")]):
        batch = [fill(f"ok{n}"), fill(f"t{n}", ts=ts)]
        if dialect == "mysql" or (dialect == "sqlite" and math.isnan(ts)):
            with pytest.raises(StorageError, match=r"nan|inf|NOT NULL"):
                await repo.save_fills(batch)
            assert f"ok{n}" not in _stored(await repo.get_trades(TradeFilter()))
            continue
        await repo.save_fills(batch)
        stored = _stored(await repo.get_trades(TradeFilter()))
        assert stored[f"t{n}"].ts == ts or (math.isnan(ts) and math.isnan(stored[f"t{n}"].ts))


async def test_a_nul_character_is_refused_by_postgresql_only(repo: SqlRepository) -> None:
    batch = [fill("t1"), fill("t\x00")]
    if repo.runner.dialect == "postgresql":  # its text cannot hold one
        with pytest.raises(StorageError):
            await repo.save_fills(batch)
        assert await repo.get_trades(TradeFilter()) == []
    else:
        await repo.save_fills(batch)
        assert await repo.get_trades(TradeFilter()) == batch


async def test_a_refused_batch_of_literals_is_not_repeated_whole_in_its_error(
    repo: SqlRepository,
) -> None:
    """A column of NULLs (a value of no type the fills have) goes as literals on
    MySQL/MariaDB and is refused there; the error names the statement's start only (the
    others show ten rows of the executemany, as SQLAlchemy does)."""
    batch = [replace(f, exchange_order_id=None) for f in _long_fills(100)]  # type: ignore[arg-type]
    with pytest.raises(StorageRejected, match="exchange_order_id") as refused:
        await repo.save_fills(batch)
    cause = refused.value.__cause__
    assert isinstance(cause, DBAPIError)
    assert len(str(cause)) < 10_000  # the 100 rows: over 40,000
    assert await repo.get_trades(TradeFilter()) == []
