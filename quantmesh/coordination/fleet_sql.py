"""The fleet on PostgreSQL or MySQL/MariaDB: membership heartbeats and the record of who
owns which symbol, in the database lock's table, so a fleet runs on its database alone.

The same records and answers (``quantmesh.coordination.membership``) as ``Fleet`` on
Redis and ``EtcdFleet`` on etcd, in rows of ``lock_leases`` (``quantmesh.storage.models``)
named under the lock prefix (``quantmesh:lock:{fleet:binance}:...``):

- ``members/<id>``: ``token`` the process's random token, ``expires_us`` when its
  heartbeat lapses, ``data`` its JSON entry (id, token, role, symbols, host, pid,
  database kind and whether it is shared);
- ``owners/<symbol>``: ``fence`` the owner's fence, ``expires_us`` when a held lease
  ends at the latest (a released record: when it was released), ``data`` the JSON
  record (owner, state ``held`` or ``released``, fence, since, the owner's database kind
  and whether it is shared). It outlives its writer: the memory of where a symbol's grid
  lives.

Time is the database server's clock (microseconds since the epoch, read in SQL with the
statement): expiry is compared there, ``Recorded.now`` and a record's ``until`` are that
clock in seconds. No two hosts' clocks are compared.

Each call is one short transaction. A heartbeat and ``record_owner`` read their row with
``SELECT ... FOR UPDATE`` and decide as the Redis scripts do: a heartbeat is refused while
another token's entry has not lapsed; a record is refused for a newer fence stored, a
late refresh of a released lease, or another instance's record with a database that is
not shared. Two first writes of one row race on its unique name: the loser reads and
decides again. A lapsed entry needs no sweep: reads skip it, the next heartbeat with its
id takes the row over.

Errors: the database unreachable, shutting down or read-only, or a call over
``request_timeout``, is ``LockUnavailable``; anything else ``LockError``: the fleet fails
closed. Messages carry no credentials.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    and_,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from quantmesh.coordination.allocation import Member
from quantmesh.coordination.membership import (
    OwnerRecord,
    Recorded,
    Registration,
    entry_of,
    member_of_entry,
    record_refusal,
)
from quantmesh.errors import LockError, LockUnavailable
from quantmesh.lock.sql import MY_NOW, PG_NOW, dialect_of
from quantmesh.secrets import mask_credentials
from quantmesh.storage.models import lock_leases

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_T = TypeVar("_T")
_ATTEMPTS = 5  # first writes of a row that others keep winning
_leases = lock_leases


def _range_end(prefix: str) -> str:
    """The end of the name range of every name starting with ``prefix`` (ASCII)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class SqlFleet:
    """Membership and ownership records of one exchange's fleet, in its database."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        prefix: str,
        exchange: str,
        me: Member,
        ttl: float,
        request_timeout: float = 5.0,
    ) -> None:
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"the fleet's ttl must be a positive number of seconds, got {ttl!r}")
        self._engine = engine
        self.dialect = dialect_of(engine)
        now = PG_NOW if self.dialect == "postgres" else MY_NOW
        self._now: ColumnElement[int] = literal_column(now, BigInteger())
        base = f"{prefix}{{fleet:{exchange}}}"
        self._members = f"{base}:members/"
        self._owners = f"{base}:owners/"
        self.me = me
        self.ttl = ttl
        self._ttl_us = max(1, round(ttl * 1_000_000))
        self._timeout = request_timeout
        self.token = secrets.token_hex(12)
        self._host = socket.gethostname()

    async def _run(self, what: str, work: Callable[[Connection], _T]) -> _T:
        """``work`` as one transaction within ``request_timeout``; a first write that lost
        its race to another is run again."""
        for _ in range(_ATTEMPTS):
            try:
                async with asyncio.timeout(self._timeout):
                    async with self._engine.begin() as conn:
                        return await conn.run_sync(work)
            except IntegrityError:
                continue  # another inserted the row first: read it and decide again
            except TimeoutError:
                raise LockUnavailable(
                    f"fleet {what} on {self.dialect}: no answer within {self._timeout:g} s"
                ) from None
            except (SQLAlchemyError, OSError) as exc:
                raise _error(exc, f"fleet {what} on {self.dialect}") from None
        raise LockError(f"fleet {what}: changed by others {_ATTEMPTS} times")

    def _server_now(self, conn: Connection) -> int:
        return int(conn.execute(select(self._now)).scalar_one())

    def _locked(self, conn: Connection, name: str) -> Any:  # a row, or None
        query = select(_leases.c.token, _leases.c.expires_us, _leases.c.data).where(
            _leases.c.name == name
        )
        return conn.execute(query.with_for_update()).one_or_none()

    def _put(self, conn: Connection, exists: bool, name: str, **values: Any) -> None:
        if exists:
            conn.execute(update(_leases).where(_leases.c.name == name).values(**values))
        else:
            conn.execute(insert(_leases).values(name=name, **values))

    # membership --------------------------------------------------------------------------

    async def heartbeat(self, symbols: frozenset[str] | None = None) -> Registration:
        """Register or renew this instance's membership for ``ttl`` seconds, claiming
        ``symbols`` (default: all it is configured with)."""
        info = json.dumps(entry_of(self.me, self.token, self._host, symbols))
        name = self._members + self.me.id

        def beat(conn: Connection) -> Registration:
            now = self._server_now(conn)
            row = self._locked(conn, name)
            if row is not None and row.token not in (None, self.token) and row.expires_us > now:
                return Registration(False, _json(row.data), (row.expires_us - now) / 1e6)
            self._put(conn, row is not None, name, token=self.token, fence=0,
                      expires_us=now + self._ttl_us, data=info)  # fmt: skip
            return Registration(True)

        return await self._run("heartbeat", beat)

    async def members(self) -> list[Member]:
        """Every member whose heartbeat has not lapsed (this one included, if registered)."""
        rows = await self._run("members", lambda conn: self._live(conn, self._members))
        found = [member_of_entry(row.data, str) for row in rows if row.data is not None]
        return [member for member in found if member is not None]

    def _live(self, conn: Connection, prefix: str) -> list[Any]:  # rows
        query = select(_leases.c.data).where(
            and_(_leases.c.name >= prefix, _leases.c.name < _range_end(prefix)),
            _leases.c.expires_us > self._now,
        )
        return list(conn.execute(query))

    async def leave(self) -> bool:
        """Drop this instance's membership at once (a clean stop); True if it was ours."""
        name = self._members + self.me.id

        def leave(conn: Connection) -> bool:
            result = conn.execute(
                update(_leases)
                .where(_leases.c.name == name, _leases.c.token == self.token)
                .values(token=None, expires_us=self._now)
            )
            return bool(result.rowcount)

        return await self._run("leave", leave)

    # owners ------------------------------------------------------------------------------

    async def record_owner(self, symbol: str, state: str, fence: int, since: float) -> Recorded:
        """Record this instance as ``symbol``'s owner (``held`` for ``ttl``, or
        ``released``), unless a newer owner is recorded, or another instance is and one of
        the two databases is not shared; the previous record."""
        if state not in ("held", "released"):
            raise ValueError(f"an ownership record is held or released, not {state!r}")
        name = self._owners + symbol
        record = json.dumps({
            "owner": self.me.id,
            "state": state,
            "fence": fence,
            "since": since,
            "shared": self.me.shared_database,
            "database": self.me.database or "",
        })  # fmt: skip

        def write(conn: Connection) -> Recorded:
            now = self._server_now(conn)
            row = self._locked(conn, name)
            previous = None if row is None else _record(row.data, row.expires_us)
            refusal = record_refusal(previous, self.me, state, fence)
            if refusal:
                return Recorded(False, previous, now / 1e6, other_database=refusal == 2)
            until = now + self._ttl_us if state == "held" else now
            self._put(conn, row is not None, name, token=None, fence=fence, expires_us=until,
                      data=record)  # fmt: skip
            return Recorded(True, previous, now / 1e6)

        return await self._run("record", write)

    @property
    def owners_key(self) -> str:
        """The name prefix of the ownership records in ``lock_leases`` (for the operator:
        delete a record's row)."""
        return self._owners

    def forget_command(self, symbol: str) -> str:
        """How an operator deletes ``symbol``'s ownership record: one SQL statement."""
        return f"DELETE FROM lock_leases WHERE name = '{self._owners}{symbol}'"

    async def owner(self, symbol: str) -> OwnerRecord | None:
        """The ownership record of one symbol, if there is a readable one."""
        query = select(_leases.c.data, _leases.c.expires_us).where(
            _leases.c.name == self._owners + symbol
        )
        row = await self._run("read", lambda conn: conn.execute(query).one_or_none())
        return None if row is None else _record(row.data, row.expires_us)

    async def owners(self) -> dict[str, OwnerRecord]:
        """The ownership record of every symbol the fleet has traded (readable ones)."""
        prefix = self._owners
        query = select(_leases.c.name, _leases.c.data, _leases.c.expires_us).where(
            _leases.c.name >= prefix, _leases.c.name < _range_end(prefix)
        )
        rows = await self._run("read", lambda conn: list(conn.execute(query)))
        found = {row.name[len(prefix) :]: _record(row.data, row.expires_us) for row in rows}
        return {symbol: record for symbol, record in found.items() if record is not None}


def build_sql_fleet(
    engine: AsyncEngine, *, prefix: str, exchange: str, me: Member, ttl: float
) -> SqlFleet:
    """The fleet store on ``engine`` (PostgreSQL or MySQL/MariaDB, with ``lock_leases``)."""
    return SqlFleet(engine, prefix=prefix, exchange=exchange, me=me, ttl=ttl)


def _json(data: str | None) -> dict[str, Any]:
    try:
        value = json.loads(data or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _record(data: str | None, expires_us: int) -> OwnerRecord | None:
    """The record in ``data`` (``until``: its row's expiry); ``None`` for none, or one this
    version cannot read."""
    try:
        value = json.loads(data or "")
        state: Literal["held", "released"] = value["state"]
        if state not in ("held", "released"):
            return None
        shared, database = value.get("shared"), value.get("database")
        return OwnerRecord(
            str(value["owner"]),
            state,
            int(value["fence"]),
            expires_us / 1e6,
            float(value.get("since", 0.0)),
            shared if isinstance(shared, bool) else None,
            database if isinstance(database, str) and database else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def _error(exc: BaseException, what: str) -> LockError:
    """A database error as ours: unreachable vs. anything else, credentials masked."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = f"{what} failed: {type(orig).__name__}: {mask_credentials(str(orig))[:300]}"
    statement_error = isinstance(exc, DBAPIError) and type(exc).__name__ in (
        "ProgrammingError",
        "DataError",
        "NotSupportedError",
    )
    return LockError(message) if statement_error else LockUnavailable(message)


__all__ = ["SqlFleet", "build_sql_fleet"]
