"""The database lock: fenced leases in a table of PostgreSQL or MySQL/MariaDB.

Leases, not advisory locks. ``pg_try_advisory_lock`` and ``GET_LOCK`` belong to the
session that took them: the lock is gone the moment its connection drops (a pooled
connection recycled, a proxy restarted, a failover), it cannot be released or seen
from any other connection of the pool, it has no TTL (a frozen holder keeps it for as
long as its TCP connection lives), and the server keeps no fence - a fence table beside
it would cost a write anyway. A lease is a row: it survives its connection, any
connection can release or renew it, it ends on its own at a time the server decides,
and its fence is stored with it. Every call is one short statement on any pooled
connection, in autocommit: no transaction is held between calls.

The table is ``lock_leases`` (``quantmesh.storage.models``, revision 0006): ``name``
(prefix + key), ``token`` (the last holder), ``fence``, ``expires_us`` (when the lease
ends, microseconds since the epoch on the DATABASE SERVER's clock: every comparison of
expiry happens in SQL against the server's clock, so no two hosts' clocks are ever
compared; 0 once released). A row stays after its release, so its fence never goes
back. A release sets only ``expires_us``, and tokens have one length, so InnoDB updates
the row in place (a token set to NULL and back cost MariaDB a tenth of its throughput).

Statements (compare-and-set, each one statement):

- acquire, PostgreSQL: ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE`` the row is
  released, expired or already ours (a request repeated after a lost reply) ``RETURNING
  fence``: no row returned means held elsewhere.
- acquire, MySQL/MariaDB: ``UPDATE ... WHERE`` the same condition, its new fence read
  back through ``LAST_INSERT_ID(expr)`` (the OK packet carries it: no second query). When
  it matches no row, a plain read tells a held key (not granted) from one never taken
  before, which is ``INSERT``-ed, a duplicate key meaning another got it first.
- release: end the lease (``expires_us = 0``) where the token is ours and not expired;
  extend: move the expiry where the token and fence are ours and not expired.

Fences: ``GREATEST(fence + 1, server time in microseconds)``. Strictly increasing per
key whatever the clock does; across keys (the levels of one symbol) they follow the
server's clock, as Redis's fences do once Redis has lost its counter, and they are of
the same magnitude as Redis's, so a fleet moved from Redis to its database keeps fences
that grow.

Durability: a lease is as durable as the commit that granted it. Run the database with
its defaults (PostgreSQL ``synchronous_commit = on``, InnoDB
``innodb_flush_log_at_trx_commit = 1``): with commits acknowledged before they are
written, a database that crashes can forget a granted lease and grant it again while its
holder still counts on it. A failover to a replica that had not received the grant does
the same (an asynchronous replica); the fence then still grows, because it follows the
server's clock, and the grid's fenced writes refuse the old holder.

Deadlines: ``time before the statement was sent + ttl - drift``, ``drift = ttl *
drift_factor + min_drift``: the server starts the lease's time when it runs the
statement, after it was sent, so the holder gives the lease up before the server can
grant it to another.

Connections: the lock keeps its own connections, checked out of its engine's pool (the
engine SQLAlchemy builds from the DSN, with its driver, connect timeout and hosts) and
used through the driver directly (asyncpg, aiomysql): one round trip per statement, no
ORM or pool checkout around it; an idle connection is taken without waiting for anything.
Each statement is bounded by ``request_timeout`` (asyncpg's own per-statement timeout; for
aiomysql, which has none, a timer that closes the connection); waiting for a connection
when all ``pool_size`` are busy, or opening one, by ``pool_timeout`` (by default
``request_timeout`` too: a lock call that cannot get a connection in that time fails
closed). A call that
failed to reach the server on a pooled connection (the server restarted since) is
repeated once at once on a fresh one - every statement is safe to repeat; a timeout is
not repeated. A connection whose call failed, timed out or was cancelled is closed.

Errors: the server unreachable, shutting down, read-only, or out of connections is
``LockUnavailable``; anything else ``LockError``; never a granted lease (fail closed).
Messages carry the driver's text with credentials masked.

``SqlElection`` elects the one instance that sends a fleet event, with a lease of the
same table that is left to expire.

Cancellation: as in the Redis lock. An acquire cancelled (or failed) after its statement
left may have taken the row: a background release with the same token clears it, and the
expiry bounds it anyway. A cancelled release is repeated in the background; a cancelled
extend leaves the old lease valid until its old deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

import structlog

from quantmesh.errors import LockError, LockUnavailable
from quantmesh.lock.base import Lease, wait_lock
from quantmesh.lock.cleanup import Cleanups
from quantmesh.lock.health import LockHealth
from quantmesh.lock.renewal import RenewedLease, renewed
from quantmesh.notify.election import unanswered
from quantmesh.secrets import mask_credentials

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.pool import PoolProxiedConnection

log = structlog.get_logger(__name__)

DEFAULT_PREFIX: Final = "quantmesh:lock:"
NAME_LEN: Final = 255  # lock_leases.name
TABLE: Final = "lock_leases"

SqlDialect = Literal["postgres", "mysql"]
_T = TypeVar("_T")


class Engine(Protocol):
    """What the lock needs of its SQLAlchemy ``AsyncEngine``: its dialect, raw pooled
    connections, and a way to close them all."""

    @property
    def dialect(self) -> Dialect: ...

    async def raw_connection(self) -> PoolProxiedConnection: ...

    async def dispose(self) -> None: ...


def dialect_of(engine: Engine) -> SqlDialect:
    name = engine.dialect.name
    if name == "postgresql":
        return "postgres"
    if name in ("mysql", "mariadb"):
        return "mysql"
    raise ValueError(f"the database lock needs PostgreSQL or MySQL/MariaDB, not {name}")


# The server's clock in microseconds since the epoch, constant within a statement.
PG_NOW: Final = "(extract(epoch from statement_timestamp()) * 1000000)::bigint"
MY_NOW: Final = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))"

# $1 name, $2 token, $3 ttl us -> the fence, or no row when held elsewhere
PG_ACQUIRE: Final = f"""
INSERT INTO {TABLE} AS l (name, token, fence, expires_us)
SELECT $1, $2, n.us, n.us + $3 FROM (SELECT {PG_NOW} AS us) AS n
ON CONFLICT (name) DO UPDATE
SET token = EXCLUDED.token, fence = GREATEST(l.fence + 1, EXCLUDED.fence),
    expires_us = EXCLUDED.expires_us
WHERE l.token IS NULL OR l.token = EXCLUDED.token OR l.expires_us <= EXCLUDED.fence
RETURNING l.fence"""
# $1 name, $2 token
PG_RELEASE: Final = (
    f"UPDATE {TABLE} SET expires_us = 0 WHERE name = $1 AND token = $2 AND expires_us > {PG_NOW}"
)
# $1 name, $2 token, $3 fence, $4 ttl us
PG_EXTEND: Final = (
    f"UPDATE {TABLE} SET expires_us = {PG_NOW} + $4 "
    f"WHERE name = $1 AND token = $2 AND fence = $3 AND expires_us > {PG_NOW}"
)

# MySQL evaluates an UPDATE's WHERE on the old row, and ``fence`` is assigned first.
# (ttl us, token, name, token) -> one row matched when granted; the fence in insert_id
MY_ACQUIRE: Final = (
    f"UPDATE {TABLE} SET fence = LAST_INSERT_ID(GREATEST(fence + 1, {MY_NOW})), "
    f"expires_us = {MY_NOW} + %s, token = %s "
    f"WHERE name = %s AND (token IS NULL OR token = %s OR expires_us <= {MY_NOW})"
)
# (name, token, ttl us): a key never taken before; a duplicate key means another has it
MY_INSERT: Final = (
    f"INSERT INTO {TABLE} (name, token, fence, expires_us) "
    f"SELECT %s, %s, n.us, n.us + %s FROM (SELECT {MY_NOW} AS us) AS n"
)
MY_FENCE: Final = f"SELECT fence FROM {TABLE} WHERE name = %s AND token = %s"
MY_EXISTS: Final = f"SELECT 1 FROM {TABLE} WHERE name = %s"
MY_RELEASE: Final = (
    f"UPDATE {TABLE} SET expires_us = 0 WHERE name = %s AND token = %s AND expires_us > {MY_NOW}"
)
MY_EXTEND: Final = (
    f"UPDATE {TABLE} SET expires_us = {MY_NOW} + %s "
    f"WHERE name = %s AND token = %s AND fence = %s AND expires_us > {MY_NOW}"
)

_HEALTH_KEY: Final = "{health}:probe"

# PostgreSQL SQLSTATE classes that say nothing about the server being unable to serve:
# a statement or data error (the schema is not what the lock expects).
_PG_STATEMENT_ERRORS: Final = ("22", "23", "42")
_MY_DUPLICATE: Final = 1062
_MY_CONFLICTS: Final = (1205, 1213)  # lock wait timeout, deadlock: another holder won


def _us(ttl: float) -> int:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"lock ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, round(ttl * 1_000_000))


class _Connections:
    """The lock's own connections: at most ``size`` open, the idle ones reused last in
    first. Taking an idle one does not wait for anything (the hot path)."""

    def __init__(self, engine: Engine, dialect: SqlDialect, size: int) -> None:
        if size < 1:
            raise ValueError("the lock needs at least one connection")
        self._engine = engine
        self._dialect = dialect
        self._size = size
        self._open_count = 0
        self._idle: list[PoolProxiedConnection] = []
        self._changed = asyncio.Event()  # a connection came back or was closed

    def idle(self) -> PoolProxiedConnection | None:
        return self._idle.pop() if self._idle else None

    async def take(self, fresh: bool, timeout: float) -> tuple[PoolProxiedConnection, bool]:
        """A connection (an idle one unless ``fresh``), and whether it was used before;
        ``give`` it back, or ``discard`` it. Waits up to ``timeout`` for one."""
        async with asyncio.timeout(timeout):
            while True:
                if self._idle and not fresh:
                    return self._idle.pop(), True
                if self._open_count < self._size:
                    self._open_count += 1
                    try:
                        return await self._open(), False
                    except BaseException:
                        self._open_count -= 1
                        self._changed.set()
                        raise
                if self._idle:  # fresh, and no room: an idle one makes room
                    self.discard(self._idle.pop())
                    continue
                self._changed.clear()
                await self._changed.wait()

    def give(self, proxied: PoolProxiedConnection) -> None:
        self._idle.append(proxied)
        self._changed.set()

    def discard(self, proxied: PoolProxiedConnection) -> None:
        _discard(proxied)
        self._open_count -= 1
        self._changed.set()

    async def _open(self) -> PoolProxiedConnection:
        proxied = await self._engine.raw_connection()
        if self._dialect == "mysql":
            try:
                await proxied.driver_connection.autocommit(True)  # type: ignore[union-attr]
            except BaseException:
                _discard(proxied)
                raise
        return proxied

    async def close(self) -> None:
        while self._idle:
            self.discard(self._idle.pop())


def _stall(conn: Any, stalled: list[bool]) -> None:
    """A MySQL statement's time is up: close its connection (aiomysql's ``close`` drops
    the socket at once), which fails the statement waiting on it."""
    stalled.append(True)
    conn.close()


def _discard(proxied: PoolProxiedConnection) -> None:
    """Close a connection for good (its state is unknown): never back into the pool.

    Called outside SQLAlchemy's greenlet on purpose: there, both drivers' adapters close
    the socket at once; inside it, asyncpg's first tries a polite close of up to 2 s,
    which a stalled server would make the caller wait out.
    """
    with contextlib.suppress(Exception):
        proxied.invalidate()


class SqlLock:
    """Fenced leases in the ``lock_leases`` table of PostgreSQL or MySQL/MariaDB."""

    def __init__(
        self,
        engine: Engine,
        *,
        prefix: str = DEFAULT_PREFIX,
        request_timeout: float = 1.0,
        pool_size: int = 10,
        pool_timeout: float | None = None,
        drift_factor: float = 0.01,
        min_drift: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.dialect: SqlDialect = dialect_of(engine)
        self.prefix = prefix
        self._timeout = request_timeout
        self._pool_timeout = request_timeout if pool_timeout is None else pool_timeout
        self._connections = _Connections(engine, self.dialect, pool_size)
        self._drift_factor = drift_factor
        self._min_drift = min_drift
        self._clock = clock
        self._cleanups = Cleanups()
        self._token_prefix = secrets.token_hex(12) + "."
        self._tokens = itertools.count(1)
        self._reason = ""  # why the last health check failed; empty while healthy
        pg = self.dialect == "postgres"
        self._acquire = self._pg_acquire if pg else self._my_acquire
        self._release_row = self._pg_release if pg else self._my_release
        self._extend_row = self._pg_extend if pg else self._my_extend

    def _name(self, key: str) -> str:
        name = self.prefix + key
        if len(name) > NAME_LEN:
            raise ValueError(f"a lock name is at most {NAME_LEN} characters: {name!r}")
        return name

    def _deadline(self, start: float, ttl: float) -> float:
        return start + ttl - (ttl * self._drift_factor + self._min_drift)

    # the lock ----------------------------------------------------------------------------

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        name, ttl_us = self._name(key), _us(ttl)
        token = f"{self._token_prefix}{next(self._tokens):x}"
        start = self._clock()
        try:
            fence = await self._run("acquire", lambda c: self._acquire(c, name, token, ttl_us))
        except BaseException:  # cancelled or failed: the statement may have run
            self._release_later(name, token)
            raise
        if fence is None:
            return None
        return Lease(key, token, int(fence), self._deadline(start, ttl))

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        return await wait_lock(self.try_lock, key, ttl, timeout, clock=self._clock)

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        """``async with locker.renewed(key, ttl)``: a lease renewed by a watchdog, always released."""
        return renewed(self, key, ttl, timeout, clock=self._clock)

    async def unlock(self, lease: Lease) -> bool:
        name = self._name(lease.key)
        try:
            return await self._run("release", lambda c: self._release_row(c, name, lease.token))
        except BaseException:  # cancelled or failed: releasing again is harmless
            self._release_later(name, lease.token)
            raise

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        name, ttl_us = self._name(lease.key), _us(ttl)
        start = self._clock()
        extended = await self._run(
            "extend", lambda c: self._extend_row(c, name, lease.token, lease.fence, ttl_us)
        )
        if not extended:
            return None
        return lease._replace(deadline=self._deadline(start, ttl))

    # statements --------------------------------------------------------------------------

    async def _pg_acquire(self, conn: Any, name: str, token: str, ttl_us: int) -> int | None:
        fence: int | None = await conn.fetchval(
            PG_ACQUIRE, name, token, ttl_us, timeout=self._timeout
        )
        return fence

    async def _pg_release(self, conn: Any, name: str, token: str) -> bool:
        status = await conn.execute(PG_RELEASE, name, token, timeout=self._timeout)
        return bool(status == "UPDATE 1")

    async def _pg_extend(self, conn: Any, name: str, token: str, fence: int, ttl_us: int) -> bool:
        status = await conn.execute(PG_EXTEND, name, token, fence, ttl_us, timeout=self._timeout)
        return bool(status == "UPDATE 1")

    @staticmethod
    async def _my_acquire(conn: Any, name: str, token: str, ttl_us: int) -> int | None:
        from pymysql.err import IntegrityError, OperationalError

        async with conn.cursor() as cur:
            try:
                if await cur.execute(MY_ACQUIRE, (ttl_us, token, name, token)):
                    return int(cur.lastrowid)
                # held by another (a plain read says so, taking no lock), or a key never
                # taken before: inserted, unless another inserts it first
                if await cur.execute(MY_EXISTS, (name,)):
                    return None
                await cur.execute(MY_INSERT, (name, token, ttl_us))
            except IntegrityError as exc:
                if exc.args[0] == _MY_DUPLICATE:  # inserted by another first
                    return None
                raise
            except OperationalError as exc:
                if exc.args[0] in _MY_CONFLICTS:
                    return None
                raise
            await cur.execute(MY_FENCE, (name, token))
            row = await cur.fetchone()
            return None if row is None else int(row[0])

    @staticmethod
    async def _my_release(conn: Any, name: str, token: str) -> bool:
        async with conn.cursor() as cur:
            return bool(await cur.execute(MY_RELEASE, (name, token)))

    @staticmethod
    async def _my_extend(conn: Any, name: str, token: str, fence: int, ttl_us: int) -> bool:
        async with conn.cursor() as cur:
            return bool(await cur.execute(MY_EXTEND, (ttl_us, name, token, fence)))

    async def _run(self, what: str, statement: Callable[[Any], Awaitable[_T]]) -> _T:
        """``statement`` on one of the lock's connections within ``request_timeout``;
        repeated once on a fresh connection when a pooled one could not reach the server.

        asyncpg bounds each statement itself (its ``timeout``, passed by the statements).
        aiomysql has no such bound: a timer closes the connection of a MySQL statement
        that has not answered in time, which fails the statement at once. (A timer
        costs far less than ``asyncio.timeout`` around each statement: at 50 tasks,
        a third of the lock's throughput.)
        """
        fresh = False
        while True:
            proxied: PoolProxiedConnection | None = None
            reused = False
            stalled: list[bool] = []  # the MySQL timer fired
            try:
                proxied = None if fresh else self._connections.idle()
                if proxied is None:
                    proxied, reused = await self._connections.take(fresh, self._pool_timeout)
                else:
                    reused = True
                conn = proxied.driver_connection
                if self.dialect == "postgres":
                    result = await statement(conn)
                else:
                    loop = asyncio.get_running_loop()
                    timer = loop.call_later(self._timeout, _stall, conn, stalled)
                    try:
                        result = await statement(conn)
                    finally:
                        timer.cancel()
            except BaseException as exc:
                if proxied is not None:  # its state is unknown: closed, never reused
                    self._connections.discard(proxied)
                elif isinstance(exc, TimeoutError):
                    raise LockUnavailable(
                        f"{self.dialect} lock {what} failed: no connection within "
                        f"{self._pool_timeout:g} s"
                    ) from None
                if isinstance(exc, TimeoutError) or stalled:
                    raise LockUnavailable(
                        f"{self.dialect} lock {what} failed: no answer within {self._timeout:g} s"
                    ) from None
                if isinstance(exc, LockError) or not isinstance(exc, Exception):
                    raise  # ours, or a cancellation
                error = self._error(exc, what)
                if reused and isinstance(error, LockUnavailable):
                    fresh = True  # a pooled connection the server closed (a restart)
                    continue
                raise error from None
            if stalled:  # answered as its timer closed the connection: the answer stands
                self._connections.discard(proxied)
            else:
                self._connections.give(proxied)
            return result

    def _error(self, exc: Exception, what: str) -> LockError:
        """A driver's error as ours: unreachable vs. anything else, credentials masked."""
        text = mask_credentials(str(exc))[:300]
        message = f"{self.dialect} lock {what} failed: {type(exc).__name__}: {text}".rstrip(": ")
        if _is_statement_error(exc):
            return LockError(message)
        return LockUnavailable(message)

    # health ------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Health check: raises ``LockError`` unless the server takes writes.

        A write, not ``SELECT 1``: a replica (a primary demoted, a read-only server)
        answers reads but can grant nothing. It changes no row.
        """
        name = self._name(_HEALTH_KEY)
        try:
            await self._run("health check", lambda c: self._release_row(c, name, "-"))
        except LockError as exc:
            self._reason = str(exc)
            raise
        self._reason = ""

    async def start(self) -> None:
        """Check the database once; the service starts halted when it cannot be reached."""
        with contextlib.suppress(LockError):
            await self.ping()

    def health(self) -> LockHealth:
        """``halted`` while the last health check failed, with its reason."""
        if self._reason:
            return LockHealth(backend=self.dialect, mode="halted", reason=self._reason)
        return LockHealth(backend=self.dialect, mode="distributed")

    # background releases -----------------------------------------------------------------

    def _release_later(self, name: str, token: str) -> None:
        """Clear ``name`` if it still holds ``token``, in the background (best effort)."""
        self._cleanups.spawn(self._release_quietly(name, token))

    async def _release_quietly(self, name: str, token: str) -> None:
        try:
            await self._run("release", lambda c: self._release_row(c, name, token))
        except LockError as exc:  # the lease's expiry bounds it
            log.debug("lock_cleanup_failed", key=name, error=str(exc))

    async def settle(self) -> None:
        """Wait for background releases (tests; ``close`` does it too)."""
        await self._cleanups.settle()

    async def close(self) -> None:
        await self._cleanups.close()
        await self._connections.close()
        await self.engine.dispose()


def _is_statement_error(exc: Exception) -> bool:
    """An error in the statement or the data (a missing table, say), not the server being
    unable to serve it."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):  # asyncpg's server errors
        return sqlstate.startswith(_PG_STATEMENT_ERRORS)
    try:
        from pymysql.err import DataError, IntegrityError, NotSupportedError, ProgrammingError
    except ImportError:  # no MySQL driver: not one of its errors
        return False
    return isinstance(exc, DataError | IntegrityError | NotSupportedError | ProgrammingError)


def build_sql_lock(
    engine: Engine,
    *,
    prefix: str = DEFAULT_PREFIX,
    request_timeout: float = 1.0,
    pool_size: int = 10,
    pool_timeout: float | None = None,
) -> SqlLock:
    """The database lock on ``engine`` (an ``AsyncEngine`` of its own, for PostgreSQL or
    MySQL/MariaDB; the lock disposes it on close). ``pool_size`` should not exceed the
    engine's ``pool_size + max_overflow``."""
    return SqlLock(engine, prefix=prefix, request_timeout=request_timeout, pool_size=pool_size,
                   pool_timeout=pool_timeout)  # fmt: skip


class SqlElection:
    """Who sends a fleet event (``quantmesh.notify.election``), on the database lock: the
    first instance to take the lease ``notify:<key>`` for ``window`` seconds sends; the
    lease is not released, so it expires by itself and the same event later is sent
    again. When the database does not answer, ``fallback()`` decides."""

    def __init__(
        self,
        lock: SqlLock,
        *,
        window: float,
        fallback: Callable[[], bool],
        timeout: float = 2.0,
    ) -> None:
        self._lock = lock
        self._window = window
        self._fallback = fallback
        self._timeout = timeout

    async def elect(self, key: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                won = await self._lock.try_lock(f"notify:{key}", self._window)
        except (LockError, TimeoutError) as exc:  # the database down: decide without it
            return unanswered(key, self._fallback, exc)
        return won is not None
