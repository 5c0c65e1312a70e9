"""What a database driver error means: classification for callers and metrics.

``map_db_error`` turns a driver or SQLAlchemy error into ours: ``StorageUnavailable``
when the database cannot be reached or cannot take the write right now (callers buffer
and retry), ``StorageRejected`` when the data itself is refused, ``StorageError``
otherwise. ``error_kind`` names the failure for ``quantmesh_db_errors_total{error}``:

- ``timeout``: a connectivity failure that is a timeout - connecting, a statement
  timeout (PostgreSQL ``statement_timeout``, MariaDB ``max_statement_time``, MySQL
  ``max_execution_time``), the driver's own command timeout, the runner's timeout around
  a transaction, waiting for a pooled connection, a lock wait the server gave up on;
- ``unavailable``: any other connectivity failure (refused, reset, server shutting down,
  read-only, disk full, no listed PostgreSQL host is a primary...);
- ``deadlock``: the server rolled the transaction back as a deadlock or serialisation
  victim (``is_retryable``);
- ``error``: anything else, the data's own errors included.

A timeout stays a connectivity failure: it maps to ``StorageUnavailable`` and is
buffered like any other outage. No message here ever includes a password.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Final, Literal

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from quantmesh.errors import StorageError, StorageRejected, StorageUnavailable
from quantmesh.secrets import mask_credentials

ErrorKind = Literal["timeout", "unavailable", "deadlock", "error"]

_CONNECTIVITY_MARKERS: Final = (
    "connect",
    "unable to open",
    "database is locked",
    "busy",
    "gone away",
    "lost",
    "timeout",
    "timed out",
    "disk i/o",
    "disk is full",
    "closed",
    "broken pipe",
    "reset by peer",
    "refused",
    "unreachable",
    "starting up",
    "not yet accepting",
    "too many connections",
    "shutting down",
    "terminat",
    "deadlock",
    "readonly database",  # SQLite: the file or its directory lost write permission
    "table is locked",  # SQLite: SQLITE_LOCKED, a conflict within the process
)
# pymysql client errors: cannot connect (2002, 2003, 2005), server gone (2006), lost (2013,
# 2055)
_MYSQL_CONNECTION_CODES: Final = frozenset({2002, 2003, 2005, 2006, 2013, 2055})
# MySQL/MariaDB server conditions that pass: disk full (1021), table full (1114), error
# during COMMIT (1180), read-only server (1290; 1792 read-only transaction; 1836 read-only
# mode), shutdown in progress (1053), query interrupted or statement timeout (1317, 1969,
# 3024), group replication rolled the commit back (3101)
_MYSQL_TRANSIENT_CODES: Final = frozenset(
    {1021, 1053, 1114, 1180, 1290, 1317, 1792, 1836, 1969, 3024, 3101}
)
# PostgreSQL: read-only transaction (25006, a demoted primary or a hot standby), session
# ended by idle_in_transaction_session_timeout (25P03), disk full (53100 is in class 53),
# query cancelled (57014 is in class 57)
_PG_TRANSIENT_STATES: Final = frozenset({"25006", "25P03"})


def map_db_error(exc: BaseException, operation: str) -> StorageError:
    """Translate a driver/SQLAlchemy error into ``StorageUnavailable`` or ``StorageError``.

    Connectivity problems (the database cannot be reached, or cannot be written right now)
    become ``StorageUnavailable`` so callers can buffer and retry; so does a transaction
    that lost a lock conflict (``is_retryable``: nothing is wrong with its data, a later
    attempt succeeds). The message names the operation and the driver error, never the DSN
    or a password.
    """
    if isinstance(exc, StorageError):
        return exc
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    detail = f"{type(cause).__name__}: {_redact(str(cause))}"
    if is_retryable(exc):
        return StorageUnavailable(f"{operation}: database busy (lost a lock conflict): {detail}")
    if _is_connectivity(exc):
        what = "timed out" if _is_timeout(exc) else "unavailable"
        return StorageUnavailable(f"{operation}: database {what}: {detail}")
    if isinstance(exc, IntegrityError | DataError):
        return StorageRejected(f"{operation} failed: {detail}")
    return StorageError(f"{operation} failed: {detail}")


def error_kind(exc: BaseException) -> ErrorKind:
    """The ``error`` label of ``quantmesh_db_errors_total`` for a failed operation.

    ``exc`` is the driver or SQLAlchemy error (or ``OSError``), or what ``map_db_error``
    made of it once raised from it: its cause is classified then.
    """
    if isinstance(exc, StorageError):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, StorageError):
            return error_kind(cause)
        return "unavailable" if isinstance(exc, StorageUnavailable) else "error"
    if is_retryable(exc):
        return "deadlock"
    if _is_connectivity(exc):
        return "timeout" if _is_timeout(exc) else "unavailable"
    return "error"


# MySQL: deadlock victim (1213), lock wait timeout (1205); PostgreSQL: serialization
# failure (40001), deadlock detected (40P01)
_MYSQL_RETRY_CODES: Final = frozenset({1213, 1205})
_PG_RETRY_STATES: Final = frozenset({"40001", "40P01"})


def is_retryable(exc: BaseException) -> bool:
    """Whether the server rolled the transaction back as a deadlock or serialisation victim,
    so running it again is the expected remedy."""
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRY_CODES:
        return True
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state in _PG_RETRY_STATES


def _is_connectivity(exc: BaseException) -> bool:
    # OSError covers ConnectionRefusedError and TimeoutError (= asyncio.TimeoutError)
    if isinstance(exc, OSError | PoolTimeout | DisconnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    # PostgreSQL: connection exceptions (08), insufficient resources (53), operator
    # intervention (57: shutting down, starting up), system errors (58)
    if isinstance(state, str) and (
        state[:2] in ("08", "53", "57", "58") or state in _PG_TRANSIENT_STATES
    ):
        return True
    args = getattr(exc.orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT_CODES:
        return True
    asyncpg = sys.modules.get("asyncpg")  # not loaded: none of its errors can be here
    unmatched = None if asyncpg is None else asyncpg.TargetServerAttributeNotMatched
    if unmatched is not None and any(isinstance(link, unmatched) for link in _chain(exc.orig)):
        return True  # no listed PostgreSQL host is what target_session_attrs asks: a failover
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if any(isinstance(link, OSError) for link in _chain(exc.orig)):
        return True
    args = getattr(exc.orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_CONNECTION_CODES:
        return True
    text = str(exc.orig).lower()
    return any(marker in text for marker in _CONNECTIVITY_MARKERS)


# MariaDB max_statement_time exceeded (1969), MySQL max_execution_time exceeded (3024)
_MYSQL_TIMEOUT_CODES: Final = frozenset({1969, 3024})
# PostgreSQL's messages for statement_timeout and lock_timeout (57014, 55P03),
# idle_in_transaction_session_timeout (25P03); pymysql's "(timed out)"
_TIMEOUT_MARKERS: Final = ("timeout", "timed out")


def _is_timeout(exc: BaseException) -> bool:
    """Of a connectivity failure: whether it is a timeout. A query cancelled for another
    reason (PostgreSQL's "due to user request", MySQL's 1317) is not."""
    if any(isinstance(link, TimeoutError | PoolTimeout) for link in _chain(exc)):
        return True  # asyncpg's connect and command timeouts, the runner's, the pool's
    if not isinstance(exc, DBAPIError):
        return False
    if any(isinstance(link, TimeoutError) for link in _chain(exc.orig)):
        return True
    args = getattr(exc.orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TIMEOUT_CODES:
        return True
    text = str(exc.orig).lower()
    return any(marker in text for marker in _TIMEOUT_MARKERS)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _redact(text: str) -> str:
    """The first line of a driver's message, its credentials masked, at most 300 characters."""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return mask_credentials(first_line)[:300]
