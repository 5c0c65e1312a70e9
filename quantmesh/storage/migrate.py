"""Schema migrations: Alembic, run on a connection the caller owns.

The scripts live in ``quantmesh/storage/migrations`` inside the package, found by path, so
no ``alembic.ini`` is needed at run time. ``upgrade`` is what ``quantmesh db upgrade`` and
the automatic upgrade on start (``database.auto_migrate``) run: it takes a database-wide
lock first (PostgreSQL advisory lock, MySQL ``GET_LOCK``; SQLite's write lock is already
held by the runner), so instances starting together migrate one after the other.

Databases created before migrations existed (by ``create_all``) have the tables but no
``alembic_version``: they are stamped with the revision their columns match, then
upgraded from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import structlog
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from quantmesh.errors import StorageError
from quantmesh.storage.models import metadata

log = structlog.get_logger(__name__)

MIGRATIONS: Final = Path(__file__).with_name("migrations")
_LOCK_NAME: Final = "quantmesh_migrate"
_PG_LOCK_KEY: Final = 0x514D_4D49  # "QMMI"
_LOCK_WAIT: Final = 120  # seconds a MySQL instance waits for another one's migration
# The first revision, and the one that added orders.lock_fence: what a pre-migration
# database (created by create_all) is stamped with, by its columns.
_BASELINE: Final = "0001"
_LOCK_FENCE: Final = "0002"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged scripts (no ini file)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def configure_context(context: Any, connection: Connection) -> None:
    """``env.py``'s ``context.configure``: the models, batch mode for SQLite's ALTERs."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StorageError("the packaged migrations have no head revision")
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; return the revision it was at before."""
    with _migration_lock(conn):
        before = current_revision(conn)
        if before is None:
            before = _stamp_legacy(conn)
        command.upgrade(alembic_config(conn), revision)
        after = current_revision(conn)
    if after != before:
        log.info("db_migrated", dialect=conn.dialect.name, before=before, after=after)
    return before


def drift(conn: Connection) -> list[Any]:
    """Differences between the database's schema and the models (empty: none)."""
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, metadata))


def _stamp_legacy(conn: Connection) -> str | None:
    tables = set(inspect(conn).get_table_names())
    if "grids" not in tables or "orders" not in tables:
        return None
    columns = {c["name"] for c in inspect(conn).get_columns("orders")}
    revision = _LOCK_FENCE if "lock_fence" in columns else _BASELINE
    command.stamp(alembic_config(conn), revision)
    log.info("db_adopted_unversioned_schema", revision=revision)
    return revision


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield
        return
    if dialect in ("mysql", "mariadb"):
        got = conn.scalar(
            text("SELECT GET_LOCK(:name, :wait)"), {"name": _LOCK_NAME, "wait": _LOCK_WAIT}
        )
        if got != 1:
            raise StorageError(f"another instance has been migrating for {_LOCK_WAIT} s")
        try:
            yield
        finally:
            conn.scalar(text("SELECT RELEASE_LOCK(:name)"), {"name": _LOCK_NAME})
        return
    yield  # SQLite: the runner's BEGIN IMMEDIATE holds the write lock
