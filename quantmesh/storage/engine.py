"""The database engines: everything that depends on the dialect or driver.

``create_engine_for`` builds the engine for the configured database and ``check_server``
refuses a server the repository cannot write under. (The dialect's upsert is built in
``statements``; driver errors are classified in ``db_errors``.) No error message here
ever includes a password.

SQLite gets a synchronous engine on the stdlib ``sqlite3`` driver, run on a thread of the
repository's own (see ``runner``):

- its connections get WAL, ``busy_timeout=5000``, ``synchronous=NORMAL`` and foreign
  keys, and never BEGIN by themselves (the runner starts each write transaction with
  ``BEGIN IMMEDIATE``);
- its data directory is created and checked up front.

The servers get async engines with pre-ping, a connect timeout and a statement timeout
(PostgreSQL: ``statement_timeout`` on the server and asyncpg's ``command_timeout``;
MySQL/MariaDB: the runner's own timeout around each transaction). They take SQLAlchemy
URLs or the seed's Go-style DSNs (``dsn``).

A PostgreSQL DSN may list several hosts (a primary and its replicas) with
``target_session_attrs``: each new connection tries them in order and keeps the first
that suits it (``read-write``: the primary). asyncpg's own multi-host connect spends one
timeout on all hosts, so a host that drops packets (its machine is gone) would eat it and
the next host would never be tried; ``_each_host`` gives every host the whole connect
timeout instead, as libpq does.

A server's sessions can be bounded on the server too (``bound_sessions``), so a process
frozen (SIGSTOP, a VM paused) in the middle of a transaction cannot keep rows locked
against the instance that takes its symbols over: an open transaction left idle is ended
by the server (PostgreSQL ``idle_in_transaction_session_timeout``, MariaDB
``idle_transaction_timeout``; MySQL has none), and a row lock is waited for within a
bound (InnoDB ``innodb_lock_wait_timeout``; PostgreSQL's ``statement_timeout`` covers it).

MySQL/MariaDB sessions run at READ COMMITTED, PostgreSQL's default, so both servers lock
alike: no gap locks, which made concurrent order inserts deadlock each other on InnoDB.
``check_server`` refuses the one server setting that cannot log writes at that level.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError

from quantmesh.errors import StartupError
from quantmesh.storage import dsn
from quantmesh.storage.dsn import DbType

__all__ = [
    "MYSQL_DRIVER",
    "POSTGRES_DRIVER",
    "SQLITE_DRIVER",
    "SQLITE_PRAGMAS",
    "SQLITE_SYNC_DRIVER",
    "DbType",
    "bound_sessions",
    "check_server",
    "create_engine_for",
    "logs_statements",
    "to_sqlalchemy_url",
]

if TYPE_CHECKING:  # the asyncio layer is loaded for a server database only
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

SQLITE_DRIVER = "sqlite+aiosqlite"  # the name configured URLs are written with
SQLITE_SYNC_DRIVER = "sqlite+pysqlite"  # the driver the engine uses
POSTGRES_DRIVER = "postgresql+asyncpg"
MYSQL_DRIVER = "mysql+aiomysql"

# scheme written by the user -> the async driver we use for it
_DRIVERS: dict[DbType, dict[str, str]] = {
    "sqlite": {
        "sqlite": SQLITE_DRIVER,
        SQLITE_DRIVER: SQLITE_DRIVER,
        SQLITE_SYNC_DRIVER: SQLITE_DRIVER,
    },
    "postgres": {
        "postgres": POSTGRES_DRIVER,
        "postgresql": POSTGRES_DRIVER,
        POSTGRES_DRIVER: POSTGRES_DRIVER,
    },
    "mysql": {
        "mysql": MYSQL_DRIVER,
        "mariadb": MYSQL_DRIVER,
        MYSQL_DRIVER: MYSQL_DRIVER,
        "mariadb+aiomysql": MYSQL_DRIVER,
    },
}

_CANONICAL: dict[DbType, str] = {
    "sqlite": SQLITE_DRIVER,
    "postgres": POSTGRES_DRIVER,
    "mysql": MYSQL_DRIVER,
}

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


def to_sqlalchemy_url(db_type: DbType, dsn: str) -> str:
    """Turn the configured ``database.dsn`` into an async SQLAlchemy URL.

    Handles a plain SQLite file path, SQLAlchemy URLs (a plain ``postgresql://`` or
    ``mysql://`` gets the async driver) and the seed's Go-style DSNs (``host=...
    dbname=...`` for PostgreSQL, ``user:pass@tcp(host:3306)/db`` for MySQL).
    """
    return _parse(db_type, dsn).render_as_string(hide_password=False)


def create_engine_for(
    db_type: DbType,
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_recycle: float = 3600.0,
    echo: bool = False,
    connect_timeout: float = 10.0,
    statement_timeout: float = 30.0,
    application_name: str | None = None,
) -> Engine | AsyncEngine:
    """Create (without connecting) the engine for ``db_type`` at ``url``.

    ``url`` is anything ``to_sqlalchemy_url`` accepts. SQLite gets a synchronous
    ``Engine``, the servers an ``AsyncEngine``. For SQLite the parent directory of the
    database file is created and must be writable, else ``StartupError`` names it.
    """
    parsed = _parse(db_type, url)
    kwargs: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_recycle": pool_recycle,
        "echo": echo,
    }
    if db_type == "sqlite":
        _prepare_sqlite_file(Path(parsed.database or ""))
    else:
        kwargs["pool_pre_ping"] = True  # a restarted server leaves dead pooled connections
        kwargs["pool_timeout"] = statement_timeout  # waiting for a free pooled connection
        kwargs["connect_args"] = _connect_args(
            db_type, parsed, connect_timeout, statement_timeout, application_name
        )
        if db_type == "postgres" and isinstance(parsed.query.get("host"), str):
            several = _each_host(parsed, kwargs["connect_args"])
            if several is not None:
                kwargs["async_creator"] = several
    if db_type == "mysql":
        # PostgreSQL's default level, which the repository is written for. InnoDB's default
        # REPEATABLE READ gap-locks the empty range a SELECT ... FOR UPDATE of a missing order
        # scanned; two writers holding the same gap then deadlock on their INSERTs into it.
        kwargs["isolation_level"] = "READ COMMITTED"
    engine: Engine | AsyncEngine
    try:
        if db_type == "sqlite":
            engine = create_engine(parsed.set(drivername=SQLITE_SYNC_DRIVER), **kwargs)
            event.listen(engine, "connect", _sqlite_on_connect)
        else:  # SQLAlchemy's asyncio layer only for a server: SQLite runs on a thread
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(parsed, **kwargs)
    except (ArgumentError, ImportError, TypeError, ValueError) as exc:
        shown = parsed.render_as_string(hide_password=True)
        raise StartupError(f"cannot create a {db_type} engine for {shown}: {exc}") from None
    log.debug("db_engine_created", db_type=db_type, url=engine.url.render_as_string())
    return engine


def bound_sessions(engine: AsyncEngine, *, idle_in_transaction: float, lock_wait: float) -> None:
    """Bound each new session of ``engine`` on the server: an open transaction left idle
    for ``idle_in_transaction`` seconds is ended (the session with it), a row lock is
    waited for at most ``lock_wait`` seconds (InnoDB). Set on the driver's connection
    directly: through SQLAlchemy's adapter a statement would open a transaction that the
    caller's own statements then ran in."""
    bounds = partial(_set_session_bounds, idle_in_transaction, lock_wait)
    event.listen(engine.sync_engine, "connect", lambda dbapi, _record: dbapi.run_async(bounds))


async def _set_session_bounds(
    idle_in_transaction: float, lock_wait: float, connection: Any
) -> None:
    if hasattr(connection, "fetchval"):  # asyncpg: PostgreSQL
        idle_ms = max(1, round(idle_in_transaction * 1000))
        await connection.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")
        return
    statements = [f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(lock_wait))}"]
    if "mariadb" in connection.get_server_info().lower():
        idle = max(1, math.ceil(idle_in_transaction))
        statements.append(f"SET SESSION idle_transaction_timeout = {idle}")
    async with connection.cursor() as cursor:
        for statement in statements:
            await cursor.execute(statement)


def check_server(conn: Connection) -> None:
    """Refuse (``StartupError``) a server whose settings the repository cannot write under.

    MySQL/MariaDB with statement-based binary logging refuses every InnoDB write made at
    READ COMMITTED (error 1665); found here, that is one clear line at start instead of
    failed writes later. (ROW and MIXED, the servers' defaults, log these writes.)
    """
    if conn.dialect.name != "mysql":
        return
    rows = conn.execute(text(_MYSQL_BINLOG_SETTINGS)).all()
    if logs_statements({str(name): str(value) for name, value in rows}):
        where = conn.engine.url.render_as_string(hide_password=True)
        raise StartupError(
            f"the MySQL/MariaDB server of {where} logs binlog_format=STATEMENT, which cannot "
            "log InnoDB writes at READ COMMITTED: set binlog_format=ROW (or MIXED) on the server"
        )


def logs_statements(settings: Mapping[str, str]) -> bool:
    """Whether MySQL/MariaDB ``settings`` (``SHOW VARIABLES`` names and values) say the
    binary log is on and statement-based."""
    lowered = {name.lower(): value.upper() for name, value in settings.items()}
    return lowered.get("log_bin") in ("ON", "1") and lowered.get("binlog_format") == "STATEMENT"


_MYSQL_BINLOG_SETTINGS: Final = (
    "SHOW SESSION VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format')"
)


def _connect_args(
    db_type: DbType,
    url: URL,
    connect_timeout: float,
    statement_timeout: float,
    application_name: str | None,
) -> dict[str, Any]:
    if db_type == "postgres":
        args: dict[str, Any] = {"command_timeout": statement_timeout, "timeout": connect_timeout}
        if "timeout" in url.query:  # the key/value DSN's connect_timeout: a number for asyncpg
            args["timeout"] = _seconds(url.query["timeout"])
        settings = {"statement_timeout": str(int(statement_timeout * 1000))}
        if application_name and "application_name" not in url.query:  # the DSN's wins
            settings["application_name"] = application_name[:63]  # the server's limit
        args["server_settings"] = settings
        return args
    if "connect_timeout" in url.query:
        return {}
    return {"connect_timeout": max(int(connect_timeout), 1)}


def _seconds(value: str | tuple[str, ...]) -> float:
    try:
        seconds = float(value) if isinstance(value, str) else -1.0
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise StartupError(
            "the postgres DSN key 'connect_timeout' (in a URL: 'timeout') must be a number "
            "of seconds above 0"
        )
    return seconds


def _each_host(url: URL, connect_args: dict[str, Any]) -> Callable[[], Awaitable[Any]] | None:
    """For a PostgreSQL URL with several hosts (``?host=a,b&port=1,2``): the connector that
    tries them in order, each with the whole connect timeout, and returns the first
    connection that suits ``target_session_attrs``. None for a URL with one host."""
    import asyncpg  # here: a configuration without PostgreSQL never loads the driver
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

    # asyncpg's own reasons to try the next host: cannot connect (refused, timed out, no
    # such name), the server is starting or shutting down, the server is not what
    # target_session_attrs asks for
    next_host = (OSError, asyncpg.CannotConnectNowError, asyncpg.TargetServerAttributeNotMatched)
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
    _, params = dialect.create_connect_args(url)  # type: ignore[no-untyped-call]  # as above
    hosts, ports = params.pop("host", None), params.pop("port", None)
    if not isinstance(hosts, list):  # one host, a socket directory say: SQLAlchemy's way
        return None
    for key in ("prepared_statement_cache_size", "prepared_statement_name_func"):
        if key in params:  # SQLAlchemy applies these only when it calls asyncpg itself
            raise StartupError(f"the postgres URL parameter {key!r} needs a single host")
    params.update(connect_args)

    async def connect() -> Any:
        failed: BaseException | None = None
        unsuitable: BaseException | None = None
        for host, port in zip(hosts, ports, strict=True):
            try:
                return await asyncpg.connect(host=host, port=port, **params)
            except next_host as exc:
                if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
                    unsuitable = exc
                else:
                    failed = exc
                log.debug("db_host_skipped", host=host, port=port, reason=type(exc).__name__)
        # as asyncpg: a host that could not be reached says more than one that was unsuitable
        error = failed or unsuitable
        assert error is not None
        raise error

    return connect


def _parse(db_type: DbType, text_dsn: str) -> URL:
    drivers = _DRIVERS.get(db_type)
    if drivers is None:
        raise StartupError(f"unknown database type {db_type!r}")
    text = text_dsn.strip()
    if not text:
        raise StartupError(f"the {db_type} database DSN is empty")
    if "://" not in text:
        if db_type == "sqlite":
            return _sqlite_url(text)
        if db_type == "postgres":
            return dsn.postgres_url(text, POSTGRES_DRIVER)
        return dsn.mysql_url(text, MYSQL_DRIVER)
    hosts: list[tuple[str, int | None]] = []
    if db_type == "postgres":  # libpq's u:p@a:5432,b:5432 is no SQLAlchemy URL: split it off
        text, hosts = dsn.postgres_url_text(text)
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        # the parser's message repeats the DSN, password included
        raise StartupError(f"cannot parse the {db_type} database URL") from None
    driver = drivers.get(url.drivername)
    if driver is None:
        raise StartupError(
            f"database type {db_type} cannot use a {url.drivername!r} URL; "
            f"expected {' or '.join(sorted(set(drivers)))}"
        )
    url = url.set(drivername=driver)
    if db_type == "sqlite":
        return _sqlite_url(url.database or "", url.query)
    if db_type == "postgres":
        return dsn.postgres_hosts(url, hosts)
    return url


def _sqlite_url(path: str, query: Any = None) -> URL:
    if path in ("", ":memory:") or path.startswith("file::memory:"):
        raise StartupError("an in-memory SQLite database loses every trade; give a file path")
    resolved = Path(path).expanduser()
    return URL.create(SQLITE_DRIVER, database=str(resolved), query=query or {})


def _prepare_sqlite_file(path: Path) -> None:
    """Create the data directory; fail with the path when it is unusable."""
    directory = path.parent
    blocker = next((p for p in (directory, *directory.parents) if p.is_file()), None)
    if blocker is not None:
        raise StartupError(
            f"cannot create the data directory {directory}: {blocker} is a file, not a directory"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create the data directory {directory}: {exc.strerror or exc}"
        ) from exc
    if path.is_dir():
        raise StartupError(f"the SQLite database path {path} is a directory")
    try:  # WAL needs to create -wal and -shm files next to the database
        with tempfile.TemporaryFile(dir=directory, prefix=".quantmesh-probe-"):
            pass
        if path.exists():
            with path.open("r+b"):
                pass
        else:  # the account's trading history: owner only (SQLite gives -wal/-shm the same)
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    except OSError as exc:
        raise StartupError(
            f"the data directory {directory} is not writable ({path}): {exc.strerror or exc}"
        ) from exc


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # no implicit BEGIN before DML: transactions start where the runner says
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()
