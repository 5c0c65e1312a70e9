"""The kind of a database failure (``quantmesh_db_errors_total{error}``): timeouts apart
from other outages, on the driver errors themselves and on real servers."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.errors import StorageError, StorageRejected, StorageUnavailable
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.db_errors import error_kind, map_db_error
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.runner import runner_for
from tests.support import free_port

from .conftest import Backend


class PgError(Exception):
    """Stands in for asyncpg's errors as SQLAlchemy adapts them: a ``sqlstate``."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class PyMySQLError(Exception):
    """Stands in for pymysql's errors, which carry the error code first."""


def pg(sqlstate: str, message: str) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, PgError(sqlstate, message))


def mysql(code: int, message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, PyMySQLError(code, message))


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),  # asyncpg's connect and command timeouts, the runner's own
        PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out"),
        pg("57014", "canceling statement due to statement timeout"),
        pg("57014", "canceling statement due to lock timeout"),
        pg("25P03", "terminating connection due to idle-in-transaction timeout"),
        mysql(1969, "Query execution was interrupted (max_statement_time exceeded)"),
        mysql(3024, "Query execution was interrupted, maximum statement execution time"),
        mysql(2013, "Lost connection to MySQL server during query (timed out)"),
        mysql(2003, "Can't connect to MySQL server on '10.0.0.9' (timed out)"),
    ],
    ids=lambda exc: f"{type(exc).__name__}-{str(getattr(exc, 'orig', exc))[:30]}",
)
def test_timeouts_are_timeouts_and_still_buffered(exc: BaseException) -> None:
    assert error_kind(exc) == "timeout"
    mapped = map_db_error(exc, "save_fills")
    assert type(mapped) is StorageUnavailable  # the write buffer keeps it
    assert str(mapped).startswith("save_fills: database timed out: ")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "unavailable"),
        (pg("57014", "canceling statement due to user request"), "unavailable"),
        (pg("57P01", "terminating connection due to administrator command"), "unavailable"),
        (mysql(1317, "Query execution was interrupted"), "unavailable"),
        (mysql(2013, "Lost connection to MySQL server during query"), "unavailable"),
        (OperationalError("x", {}, sqlite3.OperationalError("database is locked")), "unavailable"),
        (mysql(1213, "Deadlock found when trying to get lock"), "deadlock"),
        (mysql(1205, "Lock wait timeout exceeded; try restarting transaction"), "deadlock"),
        (pg("40P01", "deadlock detected"), "deadlock"),
        (IntegrityError("x", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), "error"),
        (OperationalError("x", {}, sqlite3.OperationalError("no such table: orders")), "error"),
    ],
    ids=lambda v: v if isinstance(v, str) else str(getattr(v, "orig", v))[:30],
)
def test_other_failures_keep_their_kind(exc: BaseException, kind: str) -> None:
    assert error_kind(exc) == kind


def test_a_mapped_error_is_classified_by_the_driver_error_it_was_raised_from() -> None:
    def raised(cause: BaseException) -> StorageError:
        try:
            raise map_db_error(cause, "op") from cause
        except StorageError as exc:
            return exc

    assert error_kind(raised(TimeoutError())) == "timeout"
    assert error_kind(raised(ConnectionRefusedError())) == "unavailable"
    assert error_kind(StorageUnavailable("op: database unavailable")) == "unavailable"
    assert error_kind(StorageRejected("op failed")) == "error"
    assert error_kind(StorageError("op failed")) == "error"


# --- real servers -------------------------------------------------------------------------


async def failure(
    backend: Backend,
    statements: list[str],
    *,
    statement_timeout: float = 30.0,
    runner_timeout: float | None = None,
    metrics: Metrics | None = None,
) -> StorageError:
    """Run ``statements`` in one transaction through a runner; the error it raises."""
    engine = create_engine_for(backend.db_type, backend.url, statement_timeout=statement_timeout)
    assert isinstance(engine, AsyncEngine)
    runner = runner_for(engine, None if metrics is None else metrics.db, runner_timeout)

    def work(conn: Connection) -> None:
        for statement in statements:
            conn.execute(text(statement))

    try:
        with pytest.raises(StorageError) as raised:
            await runner.run("slow_read", work, write=True)
    finally:
        await runner.close()
        await engine.dispose()
    return raised.value


SLEEP: dict[str, str] = {
    "postgres": "SELECT pg_sleep(3)",
    "mysql": "SELECT SLEEP(3) FROM (SELECT 1) AS one",
}
SERVER_STATEMENT_TIMEOUT: dict[str, str] = {
    "postgres": "SET LOCAL statement_timeout = 200",
    "mysql": "SET SESSION max_statement_time = 0.2",
}


async def test_a_server_statement_timeout_is_a_timeout(server_backend: Backend) -> None:
    """PostgreSQL ``statement_timeout``, MariaDB ``max_statement_time``: the server ends
    the statement."""
    kind = server_backend.db_type
    metrics = Metrics()
    error = await failure(
        server_backend, [SERVER_STATEMENT_TIMEOUT[kind], SLEEP[kind]], metrics=metrics
    )
    assert isinstance(error, StorageUnavailable)
    assert error_kind(error) == "timeout", error
    assert "timed out" in str(error)
    labels = {"operation": "slow_read", "error": "timeout"}
    assert metrics.registry.get_sample_value("quantmesh_db_errors_total", labels) == 1


async def test_the_drivers_command_timeout_is_a_timeout(server_backend: Backend) -> None:
    """asyncpg's ``command_timeout`` (the server's own timeout switched off here); for
    MariaDB, whose driver has none, the runner's timeout around the transaction."""
    if server_backend.db_type == "postgres":
        error = await failure(
            server_backend,
            ["SET LOCAL statement_timeout = 0", SLEEP["postgres"]],
            statement_timeout=0.3,
        )
    else:
        error = await failure(server_backend, [SLEEP["mysql"]], runner_timeout=0.3)
    assert isinstance(error, StorageUnavailable)
    assert error_kind(error) == "timeout", error


async def test_waiting_for_a_pooled_connection_is_a_timeout(server_backend: Backend) -> None:
    engine = create_engine_for(
        server_backend.db_type, server_backend.url, pool_size=1, max_overflow=0,
        statement_timeout=0.3,
    )  # fmt: skip
    assert isinstance(engine, AsyncEngine)
    runner = runner_for(engine, None, None)
    busy = asyncio.Event()

    def hold_the_connection(conn: Connection) -> None:
        conn.execute(text("SELECT 1"))
        loop.call_soon_threadsafe(busy.set)
        conn.execute(text(SLEEP[server_backend.db_type].replace("3", "1")))

    loop = asyncio.get_running_loop()
    holder = asyncio.create_task(runner.run("hold", hold_the_connection, write=True))
    try:
        await asyncio.wait_for(busy.wait(), 10)
        with pytest.raises(StorageUnavailable) as raised:
            await runner.run("read", noop, write=False)
        assert error_kind(raised.value) == "timeout", raised.value
    finally:
        await asyncio.gather(holder, return_exceptions=True)
        await runner.close()
        await engine.dispose()


def noop(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


URLS: dict[str, Callable[[int], str]] = {
    "postgres": lambda port: f"postgresql://q@127.0.0.1:{port}/q",
    "mysql": lambda port: f"mysql://q@127.0.0.1:{port}/q",
}


@pytest.mark.parametrize("db_type", ["postgres", "mysql"])
async def test_a_refused_connection_is_unavailable_not_a_timeout(db_type: str) -> None:
    backend = Backend(db_type, URLS[db_type](free_port()))  # type: ignore[arg-type]
    error = await failure(backend, ["SELECT 1"])
    assert isinstance(error, StorageUnavailable)
    assert error_kind(error) == "unavailable", error
