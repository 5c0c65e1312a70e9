"""Engine creation, URL handling and the driver errors of a real engine."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from structlog.testing import capture_logs

from quantmesh.errors import StartupError, StorageError, StorageRejected, StorageUnavailable
from quantmesh.storage.db_errors import is_retryable, map_db_error
from quantmesh.storage.engine import DbType, create_engine_for, logs_statements, to_sqlalchemy_url
from quantmesh.storage.repository import SqlRepository
from tests.support import free_port

from .conftest import Backend

PASSWORD = "s3cr3t-pw"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine_for("sqlite", str(tmp_path / "a" / "b" / "q.db"))
    assert isinstance(engine, Engine)  # SQLite runs synchronously, on the repository's thread
    yield engine
    engine.dispose()


# --- urls ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("db_type", "dsn", "expected"),
    [
        ("sqlite", "/var/lib/q/quantmesh.db", "sqlite+aiosqlite:////var/lib/q/quantmesh.db"),
        ("sqlite", "sqlite:////data/q.db", "sqlite+aiosqlite:////data/q.db"),
        ("sqlite", "sqlite+aiosqlite:////data/q.db", "sqlite+aiosqlite:////data/q.db"),
        ("sqlite", "data/q.db", "sqlite+aiosqlite:///data/q.db"),
        (
            "postgres",
            "postgresql+asyncpg://u:p@db:5432/quantmesh",
            "postgresql+asyncpg://u:p@db:5432/quantmesh",
        ),
        ("postgres", "postgresql://u:p@db/quantmesh", "postgresql+asyncpg://u:p@db/quantmesh"),
        ("postgres", "postgres://u@db/quantmesh", "postgresql+asyncpg://u@db/quantmesh"),
        ("mysql", "mysql+aiomysql://u:p@db/quantmesh", "mysql+aiomysql://u:p@db/quantmesh"),
        ("mysql", "mariadb://u:p@db/quantmesh", "mysql+aiomysql://u:p@db/quantmesh"),
        # the seed's Go-style DSNs
        (
            "postgres",
            "host=localhost user=quantmesh password=secret dbname=quantmesh",
            "postgresql+asyncpg://quantmesh:secret@localhost/quantmesh",
        ),
        (
            "postgres",
            "host=db port=6432 user=q password='a b\\'c' dbname=q sslmode=disable",
            "postgresql+asyncpg://q:a b%27c@db:6432/q?ssl=disable",
        ),
        (
            "mysql",
            "quantmesh:secret@tcp(localhost:3306)/quantmesh?charset=utf8mb4",
            "mysql+aiomysql://quantmesh:secret@localhost:3306/quantmesh?charset=utf8mb4",
        ),
        (
            "mysql",
            "q:p@w@tcp(db)/q?parseTime=true&loc=Local&timeout=5s",
            "mysql+aiomysql://q:p%40w@db/q?connect_timeout=5",
        ),
        (
            "mysql",
            "q@unix(/run/mysqld/mysqld.sock)/q",
            "mysql+aiomysql://q@localhost/q?unix_socket=%2Frun%2Fmysqld%2Fmysqld.sock",
        ),
    ],
)
def test_to_sqlalchemy_url(db_type: DbType, dsn: str, expected: str) -> None:
    assert to_sqlalchemy_url(db_type, dsn) == expected


def test_sqlite_home_paths_are_expanded() -> None:
    url = to_sqlalchemy_url("sqlite", "~/q.db")
    assert url == "sqlite+aiosqlite:///" + str(Path.home() / "q.db")


@pytest.mark.parametrize(
    ("db_type", "dsn", "reason"),
    [
        ("postgres", f"host=db user=q password={PASSWORD} db=q", "key 'db' is not supported"),
        ("postgres", f"host=db password={PASSWORD} ' dbname=q", "cannot parse"),
        ("mysql", f"q:{PASSWORD}@tcp(db:3306)", "cannot parse"),
        ("mysql", f"q:{PASSWORD}@tcp(db:http)/q", "invalid port"),
        ("postgres", f"postgresql+psycopg2://q:{PASSWORD}@db/q", "cannot use"),
        ("mysql", f"postgresql+asyncpg://q:{PASSWORD}@db/q", "cannot use"),
        ("sqlite", ":memory:", "in-memory"),
        ("sqlite", "sqlite+aiosqlite://", "in-memory"),
        ("sqlite", "  ", "empty"),
    ],
)
def test_unsupported_dsns_raise_startup_error_without_secrets(
    db_type: DbType, dsn: str, reason: str
) -> None:
    with pytest.raises(StartupError, match=reason) as info:
        create_engine_for(db_type, dsn)
    assert PASSWORD not in str(info.value)


# --- sqlite files -------------------------------------------------------------------------


def test_sqlite_connections_get_wal_busy_timeout_synchronous_and_foreign_keys(
    sqlite_engine: Engine,
) -> None:
    with sqlite_engine.connect() as conn:
        pragmas = {
            name: conn.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 5000,
        "synchronous": 1,
        "foreign_keys": 1,
    }


def test_the_data_directory_is_created(tmp_path: Path) -> None:
    engine = create_engine_for("sqlite", f"sqlite:///{tmp_path}/x/y/q.db")
    try:
        assert (tmp_path / "x" / "y").is_dir()
    finally:
        assert isinstance(engine, Engine)
        engine.dispose()


def test_an_uncreatable_data_directory_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StartupError, match=str(blocker / "sub")):
        create_engine_for("sqlite", str(blocker / "sub" / "q.db"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_an_unwritable_data_directory_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    data.mkdir(mode=0o500)
    try:
        with pytest.raises(StartupError, match=f"{data}.*not writable"):
            create_engine_for("sqlite", str(data / "q.db"))
    finally:
        data.chmod(0o700)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_existing_directory_nobody_can_write_is_a_startup_error() -> None:
    # /proc refuses new files even to root, unlike a chmod-ed directory
    with pytest.raises(StartupError, match="data directory /proc is not writable"):
        create_engine_for("sqlite", "/proc/quantmesh.db")


def test_a_directory_as_database_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="is a directory"):
        create_engine_for("sqlite", str(tmp_path))


async def aiosqlite_threads_finished() -> None:
    """aiosqlite stops the worker thread of a failed connect without waiting for it; the
    thread must finish before the test's event loop closes."""
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 5)
            assert not thread.is_alive()


async def test_sqlite_vanished_directory_is_storage_unavailable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    repo = SqlRepository(create_engine_for("sqlite", str(data / "q.db")), "binance")
    shutil.rmtree(data)  # with the (empty, owner-only) database file created beforehand
    try:
        with pytest.raises(StartupError, match="cannot use the sqlite database") as info:
            await repo.start()
        assert isinstance(info.value.__cause__, StorageUnavailable)
    finally:
        await repo.close()
        await aiosqlite_threads_finished()


# --- unreachable servers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("db_type", "scheme"), [("postgres", "postgresql+asyncpg"), ("mysql", "mysql+aiomysql")]
)
async def test_an_unreachable_server_is_storage_unavailable_without_the_password(
    db_type: DbType, scheme: str
) -> None:
    url = f"{scheme}://quantmesh:{PASSWORD}@127.0.0.1:{free_port()}/quantmesh"
    with capture_logs() as logs:
        repo = SqlRepository(create_engine_for(db_type, url), "binance")
        try:
            async with asyncio.timeout(20):
                with pytest.raises(StartupError, match=r"check database\.dsn") as info:
                    await repo.start()
        finally:
            await repo.close()
    assert isinstance(info.value.__cause__, StorageUnavailable)
    assert "\n" not in str(info.value)
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(logs)


# --- error mapping ------------------------------------------------------------------------


def operational(message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(
    "exc",
    [
        operational("database is locked"),
        operational("unable to open database file"),
        operational("disk I/O error"),
        InterfaceError("SELECT 1", {}, Exception("connection is closed")),
        OperationalError("SELECT 1", {}, Exception((2013, "Lost connection to MySQL server"))),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_connectivity_errors_map_to_storage_unavailable(exc: BaseException) -> None:
    mapped = map_db_error(exc, "save_fills")
    assert isinstance(mapped, StorageUnavailable)
    assert str(mapped).startswith("save_fills: ")


def test_mysql_client_error_codes_map_to_storage_unavailable() -> None:
    class PyMySQLOperationalError(Exception):
        """Stands in for the driver's error class, which carries the client error code."""

    exc = OperationalError("SELECT 1", {}, PyMySQLOperationalError(2003, "Can't reach"))
    assert isinstance(map_db_error(exc, "op"), StorageUnavailable)


def test_other_database_errors_map_to_storage_error() -> None:
    mapped = map_db_error(operational("no such table: orders"), "save_orders")
    assert type(mapped) is StorageError
    assert "save_orders failed" in str(mapped)


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        DataError("INSERT", {}, sqlite3.DataError("value too long")),
    ],
    ids=["integrity", "data"],
)
def test_errors_of_the_data_itself_map_to_storage_rejected(exc: BaseException) -> None:
    """The write buffer dead-letters these instead of retrying them forever."""
    mapped = map_db_error(exc, "save_orders")
    assert type(mapped) is StorageRejected
    assert "save_orders failed" in str(mapped)


def test_postgres_server_states_map_to_storage_unavailable() -> None:
    class PgError(Exception):
        sqlstate = "57P03"  # cannot_connect_now: the server is starting up

    exc = DBAPIError("SELECT 1", {}, PgError("the database system is not yet accepting"))
    assert isinstance(map_db_error(exc, "op"), StorageUnavailable)


class PgReadOnly(Exception):
    sqlstate = "25006"  # read_only_sql_transaction: a demoted primary, a hot standby


@pytest.mark.parametrize(
    "exc",
    [
        DBAPIError("INSERT", {}, PgReadOnly("cannot execute INSERT in a read-only transaction")),
        *(
            OperationalError("INSERT", {}, Exception(code, "transient"))
            for code in (1021, 1053, 1114, 1180, 1290, 1317, 1969, 3024, 3101)
        ),
        *(  # pymysql raises some server codes as InternalError, a plain DBAPIError
            DBAPIError("INSERT", {}, Exception(code, "transient")) for code in (1053, 1317)
        ),
        operational("attempt to write a readonly database"),
        operational("database table is locked"),
    ],
    ids=lambda exc: f"{type(exc).__name__}-{getattr(exc.orig, 'args', ('',))[0]}",
)
def test_server_conditions_that_pass_map_to_storage_unavailable(exc: BaseException) -> None:
    """Read-only (demoted) servers, full disks, shutdowns, statement timeouts: nothing is
    wrong with the data, a later attempt succeeds, so the write buffer must keep them."""
    assert isinstance(map_db_error(exc, "save_fills"), StorageUnavailable)


class PyMySQLError(Exception):
    """Stands in for pymysql's errors, which carry the server's error code first."""


class PgSerialisationError(Exception):
    sqlstate = "40001"


class PgDeadlockError(Exception):
    sqlstate = "40P01"


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("INSERT", {}, PyMySQLError(1213, "Deadlock found when trying to get")),
        OperationalError("INSERT", {}, PyMySQLError(1205, "Lock wait timeout exceeded")),
        DBAPIError("INSERT", {}, PgDeadlockError("deadlock detected")),
        DBAPIError("UPDATE", {}, PgSerialisationError("could not serialize access")),
    ],
    ids=["mysql-deadlock", "mysql-lock-wait", "pg-deadlock", "pg-serialisation"],
)
def test_a_lost_lock_conflict_is_retryable_and_maps_to_storage_unavailable(
    exc: DBAPIError,
) -> None:
    """The runner retries these; one that lost every attempt must be buffered by the write
    buffer (``StorageUnavailable``), never dead-lettered as bad data or raised to a trader."""
    assert is_retryable(exc)
    mapped = map_db_error(exc, "save_orders")
    assert type(mapped) is StorageUnavailable
    assert str(mapped).startswith("save_orders: database busy (lost a lock conflict): ")


def test_other_errors_are_not_retried() -> None:
    assert not is_retryable(OperationalError("INSERT", {}, PyMySQLError(1406, "Data too long")))
    assert not is_retryable(operational("database is locked"))  # SQLite waits by itself
    assert not is_retryable(TimeoutError())


async def test_server_sessions_run_at_read_committed(server_backend: Backend) -> None:
    """InnoDB's default REPEATABLE READ gap-locks the range a locking read of a missing order
    scanned: concurrent inserts of new orders then deadlock each other."""
    repo = SqlRepository(create_engine_for(server_backend.db_type, server_backend.url), "binance")
    query = "SHOW transaction_isolation"
    if server_backend.db_type == "mysql":
        query = "SHOW VARIABLES WHERE Variable_name IN ('tx_isolation', 'transaction_isolation')"

    def level(conn: Connection) -> str:
        row = conn.execute(text(query)).first()
        assert row is not None
        return str(row[-1])

    try:
        isolation = await repo._runner.run("isolation", level, write=True)
    finally:
        await repo.close()
    assert isolation.upper().replace("-", " ") == "READ COMMITTED"


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"log_bin": "ON", "binlog_format": "STATEMENT"}, True),
        ({"log_bin": "ON", "binlog_format": "MIXED"}, False),
        ({"log_bin": "ON", "binlog_format": "ROW"}, False),
        ({"log_bin": "OFF", "binlog_format": "STATEMENT"}, False),  # no binary log at all
        ({"binlog_format": "STATEMENT"}, False),
    ],
)
def test_only_statement_based_binary_logging_is_refused(
    settings: dict[str, str], refused: bool
) -> None:
    """MySQL/MariaDB refuse InnoDB writes at READ COMMITTED when they log statements
    (error 1665); the repository says so at start instead."""
    assert logs_statements(settings) is refused


def test_error_messages_never_carry_credentials() -> None:
    exc = OperationalError(
        "SELECT 1",
        {},
        Exception(f"could not connect to postgresql://q:{PASSWORD}@db/q (password={PASSWORD})"),
    )
    mapped = map_db_error(exc, "start")
    assert isinstance(mapped, StorageUnavailable)
    assert PASSWORD not in str(mapped)
    assert "SELECT 1" not in str(mapped)
