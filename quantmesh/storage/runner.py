"""The transaction runners: one database transaction run from asyncio.

The repository writes each operation's database work as one synchronous function of a
SQLAlchemy ``Connection``; a runner executes it as one transaction (``write=True``) or as
plain reads, maps driver errors with ``map_db_error`` and returns the function's result.

- ``ThreadRunner`` (SQLite): a synchronous engine on the stdlib ``sqlite3`` driver, used
  by one dedicated thread only, which keeps one connection checked out between
  transactions. A whole transaction costs one hop to that thread and back, and the
  thread serialises this process's writers. Write transactions start with ``BEGIN
  IMMEDIATE``, so they hold SQLite's write lock from their first statement and may read,
  then write what they read (other processes wait up to ``busy_timeout``).
- ``AsyncRunner`` (PostgreSQL, MySQL/MariaDB): the async engine; the function runs in
  ``AsyncConnection.run_sync`` inside ``engine.begin()``, the whole transaction within an
  optional timeout (a silent partition otherwise hangs a driver without read timeouts).

Metrics, given ``metrics``: both record ``quantmesh_db_query_duration_seconds{operation}``
and ``quantmesh_db_errors_total{operation,error}`` per transaction, and export the
pool's connections as ``quantmesh_db_connections{state}``.

Conflicts: a transaction the server chose as a deadlock victim, timed out waiting for a
row lock or failed to serialise is run again, up to ``RETRIES`` attempts, after a
jittered exponential backoff (``backoff``): immediate retries of the same few
transactions tend to collide again when the host is busy.

- each retry counts as ``error="retried"``;
- a transaction that lost every attempt counts as ``error="deadlock"`` and reaches the
  caller as ``StorageUnavailable`` (``map_db_error``), which the write buffer journals
  and replays: a conflict never loses a write, nor is it mistaken for bad data.

Cancellation: a caller cancelled while its transaction runs stops waiting, but the
transaction runs to its end in the thread and MAY COMMIT; one cancelled while still queued
behind another is never run. Either way the connection is left clean.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from quantmesh.errors import StorageError
from quantmesh.observability.metrics import DbMetrics
from quantmesh.storage.blockers import BlockerWatch
from quantmesh.storage.db_errors import error_kind, is_retryable, map_db_error

if TYPE_CHECKING:  # the asyncio layer is loaded for a server database only
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

THREAD_NAME_PREFIX: Final = "quantmesh-db"
RETRIES: Final = 8  # attempts of a transaction that lost a deadlock or serialisation race
BACKOFF_BASE: Final = 0.005  # s; the ceiling of the first retry's delay, doubled per retry
BACKOFF_CAP: Final = 0.25  # s; the largest delay ceiling (under 0.6 s of delays in all)


class _Recorder:
    """Times operations and counts their errors (no-op without metrics)."""

    def __init__(self, metrics: DbMetrics | None) -> None:
        self.metrics = metrics

    def done(self, operation: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.query_duration.labels(operation).observe(time.perf_counter() - started)

    def failed(self, operation: str, error: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(operation, error).inc()

    def pool(self, open_: Callable[[], float], in_use: Callable[[], float]) -> None:
        if self.metrics is None:
            return
        gauge = self.metrics.connections
        gauge.labels("open").set_function(open_)
        gauge.labels("in_use").set_function(in_use)
        gauge.labels("idle").set_function(lambda: max(open_() - in_use(), 0))


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: "full jitter", uniform up to a ceiling
    that doubles per attempt, so the transactions that collided spread apart."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))


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

    async def run(self, operation: str, work: Callable[[Connection], _T], *, write: bool) -> _T:
        """``work(conn)`` in one transaction, committed when it returns (``write``), or as
        reads. Raises ``StorageUnavailable``/``StorageError`` named after ``operation``."""
        ...

    async def close(self) -> None:
        """Wait for the work already handed over, then release every connection."""
        ...


def runner_for(
    engine: Engine | AsyncEngine,
    metrics: DbMetrics | None = None,
    timeout: float | None = None,
) -> Runner:
    """The runner for an engine from ``create_engine_for``; ``timeout`` bounds each
    transaction of a server (seconds, connecting included)."""
    if isinstance(engine, Engine):
        return ThreadRunner(engine, metrics)
    return AsyncRunner(engine, metrics, timeout)


class ThreadRunner:
    """Every use of ``engine`` on one thread of its own; see the module docstring."""

    def __init__(self, engine: Engine, metrics: DbMetrics | None = None) -> None:
        self._engine = engine
        self._immediate = engine.dialect.name == "sqlite"
        # the thread starts with the first transaction and ends in close()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME_PREFIX)
        self._conn: Connection | None = None  # used on the thread only
        self._busy = 0
        self._closed = False
        self._recorder = _Recorder(metrics)
        self._recorder.pool(
            lambda: 1.0 if self._conn is not None else 0.0, lambda: float(self._busy)
        )

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def exclusive_writes(self) -> bool:
        return self._immediate

    async def run(self, operation: str, work: Callable[[Connection], _T], *, write: bool) -> _T:
        if self._closed:
            raise StorageError(f"{operation} failed: the repository is closed")
        loop = asyncio.get_running_loop()
        # the caller's context variables (structlog's bound symbol...) go along
        call = functools.partial(contextvars.copy_context().run, self._transaction, work, write)
        started = time.perf_counter()
        try:
            result = await loop.run_in_executor(self._executor, call)
        except (SQLAlchemyError, OSError) as exc:
            error = map_db_error(exc, operation)
            self._recorder.failed(operation, error_kind(exc))
            raise error from exc
        self._recorder.done(operation, started)
        return result

    def _transaction(self, work: Callable[[Connection], _T], write: bool) -> _T:
        """Runs in the thread, on the connection it keeps between transactions."""
        self._busy = 1
        try:
            return self._transaction_on(self._connection(), work, write)
        finally:
            self._busy = 0

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._conn = self._engine.connect()
        return conn

    def _transaction_on(
        self, conn: Connection, work: Callable[[Connection], _T], write: bool
    ) -> _T:
        try:
            if write and self._immediate:  # the connection does not BEGIN by itself
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            result = work(conn)
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

    def __init__(
        self, engine: AsyncEngine, metrics: DbMetrics | None = None, timeout: float | None = None
    ) -> None:
        self._engine = engine
        self._timeout = timeout
        self._closed = False
        self._recorder = _Recorder(metrics)
        # a frozen former owner's session can hold our rows on PostgreSQL: see blockers.py
        self._ends_blockers = engine.dialect.name == "postgresql"
        pool: Any = engine.sync_engine.pool
        self._recorder.pool(
            lambda: float(pool.checkedin() + pool.checkedout()), lambda: float(pool.checkedout())
        )

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def exclusive_writes(self) -> bool:
        return False  # row locks (SELECT ... FOR UPDATE) at most

    async def run(self, operation: str, work: Callable[[Connection], _T], *, write: bool) -> _T:
        if self._closed:
            raise StorageError(f"{operation} failed: the repository is closed")
        started = time.perf_counter()
        for attempt in range(1, RETRIES + 1):
            try:
                result = await self._once(work, write)
            except (SQLAlchemyError, OSError) as exc:
                conflict = is_retryable(exc)
                if conflict and attempt < RETRIES:
                    self._recorder.failed(operation, "retried")
                    log.debug("db_transaction_retried", operation=operation, attempt=attempt)
                    await asyncio.sleep(backoff(attempt))
                    continue
                error = map_db_error(exc, operation)
                self._recorder.failed(operation, "deadlock" if conflict else error_kind(exc))
                if conflict:
                    log.warning("db_transaction_conflicts", operation=operation, attempts=attempt)
                raise error from exc
            self._recorder.done(operation, started)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, work: Callable[[Connection], _T], write: bool) -> _T:
        # a silent partition (no RST, no answer) hangs a driver that has no read timeout
        # of its own (aiomysql): TimeoutError maps to StorageUnavailable
        async with asyncio.timeout(self._timeout):
            return await self._transaction(work, write)

    async def _transaction(self, work: Callable[[Connection], _T], write: bool) -> _T:
        if write:
            async with self._engine.begin() as conn:
                if not self._ends_blockers:
                    return await conn.run_sync(work)
                watch = BlockerWatch(self._engine, conn)
                try:
                    return await conn.run_sync(work)
                finally:
                    watch.stop()
        async with self._engine.connect() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        self._closed = True
        await self._engine.dispose()
