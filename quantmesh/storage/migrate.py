"""Schema migrations: Alembic, run on a connection the caller owns.

The scripts live in ``quantmesh/storage/migrations`` inside the package, found by path, so
no ``alembic.ini`` is needed at run time. ``upgrade`` is what ``quantmesh db upgrade`` and
the automatic upgrade on start (``database.auto_migrate``) run: it takes a database-wide
lock first (PostgreSQL advisory lock, MySQL ``GET_LOCK``; SQLite's write lock is already
held by the runner), so instances starting together migrate one after the other.

Databases created before migrations existed (by ``create_all``) have the tables but no
``alembic_version``: they are stamped with the revision their columns match, then
upgraded from there.

Alembic is imported only when there is something to migrate: a database already at
``HEAD`` (every start after the first) is checked with one query, so an instance starts
without loading it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog
from sqlalchemy import Connection, inspect, text

from quantmesh.errors import StorageError
from quantmesh.storage.models import metadata

if TYPE_CHECKING:
    from alembic.config import Config

log = structlog.get_logger(__name__)

MIGRATIONS: Final = Path(__file__).with_name("migrations")
HEAD: Final = "0006"  # the newest script's revision (a test checks it against the scripts)
_LOCK_NAME: Final = "quantmesh_migrate"
_PG_LOCK_KEY: Final = 0x514D_4D49  # "QMMI"
_LOCK_WAIT: Final = 120  # seconds a MySQL instance waits for another one's migration
# The first revision, and the one that added orders.lock_fence: what a pre-migration
# database (created by create_all) is stamped with, by its columns.
_BASELINE: Final = "0001"
_LOCK_FENCE: Final = "0002"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged scripts (no ini file)."""
    from alembic.config import Config

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
    """The revision this version's schema is at."""
    return HEAD


def scripts_head() -> str | None:
    """The head revision of the packaged scripts, as Alembic finds it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The revision the database is stamped with (None: none)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    versions = list(conn.scalars(text("SELECT version_num FROM alembic_version")))
    if len(versions) > 1:
        raise StorageError(f"the database is stamped with several revisions: {versions}")
    return versions[0] if versions else None


def upgrade(conn: Connection, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; return the revision it was at before.

    ``"head"`` (what a start asks) creates an empty database's tables from the models and
    stamps it ``HEAD`` - the schema the scripts would build (a test compares the two) - and
    leaves a database already at ``HEAD`` alone, neither loading Alembic. Any other
    revision, or a database behind ``HEAD``, runs the scripts.
    """
    if revision in ("head", HEAD) and current_revision(conn) == HEAD:
        return HEAD  # nothing to do
    with _migration_lock(conn):
        before = current_revision(conn)
        if before is None and revision == "head" and not inspect(conn).get_table_names():
            _create_at_head(conn)
            after: str | None = HEAD
        else:
            from alembic import command

            if before is None:
                before = _stamp_legacy(conn)
            command.upgrade(alembic_config(conn), revision)
            after = current_revision(conn)
    if after != before:
        log.info("db_migrated", dialect=conn.dialect.name, before=before, after=after)
    return before


def _create_at_head(conn: Connection) -> None:
    """An empty database: the models' tables, and Alembic's version table stamped ``HEAD``
    (as ``alembic stamp`` writes it)."""
    metadata.create_all(conn)
    conn.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD})


def drift(conn: Connection) -> list[Any]:
    """Differences between the database's schema and the models (empty: none)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, metadata))


def _stamp_legacy(conn: Connection) -> str | None:
    tables = set(inspect(conn).get_table_names())
    if "grids" not in tables or "orders" not in tables:
        return None
    from alembic import command

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
