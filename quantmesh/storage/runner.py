"""Run one database transaction from asyncio.

The repository writes each operation's database work as one synchronous function of a
SQLAlchemy ``Connection``; a runner executes it as one transaction (``write=True``) or as
plain reads, maps driver errors with ``map_db_error`` and returns the function's result.

- ``ThreadRunner`` (SQLite): a synchronous engine on the stdlib ``sqlite3`` driver, used by
  one dedicated thread only, which keeps one connection checked out between transactions.
  A whole transaction costs one hop to that thread and back, and the thread serialises
  this process's writers. Write transactions start with
  ``BEGIN IMMEDIATE``, so they hold SQLite's write lock from their first statement and may
  read, then write what they read (other processes wait up to ``busy_timeout``).
- ``AsyncRunner`` (PostgreSQL, MySQL/MariaDB): the async engine; the function runs in
  ``AsyncConnection.run_sync`` inside ``engine.begin()``.

Cancellation: a caller cancelled while its transaction runs stops waiting, but the
transaction runs to its end in the thread and MAY COMMIT; one cancelled while still queued
behind another is never run. Either way the connection is left clean.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, Protocol, TypeVar

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.errors import StorageError
from quantmesh.storage.engine import map_db_error

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

THREAD_NAME_PREFIX: Final = "quantmesh-db"


class Runner(Protocol):
    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect name: ``sqlite``, ``postgresql``, ``mysql``..."""
        ...

    @property
    def exclusive_writes(self) -> bool:
        """Whether a write transaction holds the database's write lock from its start, so
        nothing else can change what it has read."""
        ...

    async def run(self, operation: str, fn: Callable[[Connection], _T], *, write: bool) -> _T:
        """``fn(conn)`` in one transaction, committed when it returns (``write``), or as
        reads. Raises ``StorageUnavailable``/``StorageError`` named after ``operation``."""
        ...

    async def close(self) -> None:
        """Wait for the work already handed over, then release every connection."""
        ...


def runner_for(engine: Engine | AsyncEngine) -> Runner:
    """The runner for an engine from ``create_engine_for``."""
    if isinstance(engine, AsyncEngine):
        return AsyncRunner(engine)
    return ThreadRunner(engine)


class ThreadRunner:
    """Every use of ``engine`` on one thread of its own; see the module docstring."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._immediate = engine.dialect.name == "sqlite"
        # the thread starts with the first transaction and ends in close()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME_PREFIX)
        self._conn: Connection | None = None  # used on the thread only
        self._closed = False

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def exclusive_writes(self) -> bool:
        return self._immediate

    async def run(self, operation: str, fn: Callable[[Connection], _T], *, write: bool) -> _T:
        if self._closed:
            raise StorageError(f"{operation} failed: the repository is closed")
        loop = asyncio.get_running_loop()
        # the caller's context variables (structlog's bound symbol...) go along
        call = functools.partial(contextvars.copy_context().run, self._transaction, fn, write)
        try:
            return await loop.run_in_executor(self._executor, call)
        except (SQLAlchemyError, OSError) as exc:
            raise map_db_error(exc, operation) from exc

    def _transaction(self, fn: Callable[[Connection], _T], write: bool) -> _T:
        """Runs in the thread, on the connection it keeps between transactions."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._conn = self._engine.connect()
        try:
            if write and self._immediate:  # the connection does not BEGIN by itself
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            result = fn(conn)
            if write:
                conn.commit()
            else:
                conn.rollback()  # ends SQLAlchemy's transaction; SQLite began none
            return result
        except BaseException:
            self._conn = None  # the next transaction starts on a fresh checkout
            try:
                conn.close()  # rolls back whatever was not committed
            except SQLAlchemyError as exc:  # the first error is the one to report
                log.warning("db_rollback_failed", error=str(map_db_error(exc, "rollback")))
            raise

    def _dispose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:  # queued after every transaction handed over before
            await loop.run_in_executor(self._executor, self._dispose)
        finally:
            self._executor.shutdown(wait=True)  # the thread is idle by now: a quick join
        log.debug("db_thread_stopped")


class AsyncRunner:
    """The async engine of a database server; see the module docstring."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def exclusive_writes(self) -> bool:
        return False  # row locks (SELECT ... FOR UPDATE) at most

    async def run(self, operation: str, fn: Callable[[Connection], _T], *, write: bool) -> _T:
        try:
            if write:
                async with self._engine.begin() as conn:
                    return await conn.run_sync(fn)
            async with self._engine.connect() as conn:
                return await conn.run_sync(fn)
        except (SQLAlchemyError, OSError) as exc:
            raise map_db_error(exc, operation) from exc

    async def close(self) -> None:
        await self._engine.dispose()
