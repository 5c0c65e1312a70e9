"""Ending the PostgreSQL sessions of another instance that block one of ours.

asyncpg prepares a statement it has not cached with Parse/Describe/Flush, and sends its
Bind/Execute/Sync afterwards. A process frozen between the two (SIGSTOP, a paused VM)
leaves its session ``active``, waiting in ``ClientRead``, with its transaction's row locks
held - and no timeout of PostgreSQL before 17 (``transaction_timeout``) ends a session in
that state: ``idle_in_transaction_session_timeout`` does not apply, and a query cancel is
ignored while the server reads. The instance that took the frozen one's symbols over would
wait on those rows until the frozen one thawed or died.

So a write transaction of ours still running after ``BLOCKED_AFTER`` seconds looks, from
another connection, at the sessions blocking it (``pg_blocking_pids``) and ends
(``pg_terminate_backend``) those of another QuantMesh instance (``application_name``
``quantmesh <id>``, set by ``wiring.build_engine``). That is safe: a transaction holding
our rows for a second is a former owner's (its grid writes are refused by the fence
anyway), and whatever it ends is rolled back, found failed by that instance and journaled
by its write buffer. Sessions of other programs, and this instance's own, are never
touched. A server that refuses (the role may not signal the other's backends) is logged
once per process; the transaction then waits as before.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

BLOCKED_AFTER: Final = 1.0  # seconds a write transaction runs before its blockers are looked at
CHECK_TIMEOUT: Final = 1.0  # one look, its connection included

_END: Final = text(
    "SELECT pid, application_name, pg_terminate_backend(pid) AS ended "
    "FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(:pid)) "
    "AND application_name LIKE 'quantmesh %' "
    "AND application_name <> current_setting('application_name')"
)


class BlockerWatch:
    """Started with a write transaction of ``engine`` (PostgreSQL) on ``conn``, stopped
    when it ends; in between, every ``BLOCKED_AFTER`` seconds, ends the sessions of other
    instances that block it."""

    _refused = False  # the server refused once: not asked again in this process

    def __init__(self, engine: AsyncEngine, conn: AsyncConnection) -> None:
        self._engine = engine
        self._conn = conn
        self._timer = asyncio.get_running_loop().call_later(BLOCKED_AFTER, self._start)
        self._task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def _start(self) -> None:
        if not BlockerWatch._refused:
            self._task = asyncio.create_task(self._watch(), name="db-blockers")

    async def _watch(self) -> None:
        pid = self._conn.sync_connection.connection.driver_connection.get_server_pid()  # type: ignore[union-attr]
        while True:
            try:
                async with asyncio.timeout(CHECK_TIMEOUT), self._engine.connect() as check:
                    rows = (await check.execute(_END, {"pid": pid})).all()
                    await check.commit()
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                if "permission" in str(exc).lower() or "must be" in str(exc).lower():
                    BlockerWatch._refused = True
                    log.warning("db_blockers_not_ended", error=str(exc).splitlines()[0])
                    return
                rows = []
            ended = [f"{row.application_name} (pid {row.pid})" for row in rows if row.ended]
            if ended:
                log.warning("db_blocking_sessions_ended", sessions=ended)
            await asyncio.sleep(BLOCKED_AFTER)
