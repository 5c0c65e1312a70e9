"""Alembic migrations: an empty database upgraded to head matches the models exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text

from quantmesh.errors import StartupError
from quantmesh.storage import migrate
from quantmesh.storage import models as m
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository

from .conftest import Backend, RepoFactory
from .support import SYMBOL, order


async def run(repo: SqlRepository, fn: Any, *, write: bool = False) -> Any:
    return await repo._runner.run("test", fn, write=write)


def bare_repo(backend: Backend, **kwargs: Any) -> SqlRepository:
    return SqlRepository(create_engine_for(backend.db_type, backend.url), "binance", **kwargs)


async def test_an_empty_database_upgraded_to_head_has_no_drift_from_the_models(
    backend: Backend,
) -> None:
    repo = bare_repo(backend)
    try:
        await repo.start()
        assert await run(repo, migrate.current_revision) == migrate.head_revision()
        assert await run(repo, migrate.drift) == []
        tables = set(await run(repo, lambda conn: inspect(conn).get_table_names()))
        assert tables == {*m.metadata.tables, "alembic_version"}
    finally:
        await repo.close()


async def test_the_drift_check_sees_a_missing_column(backend: Backend) -> None:
    """The no-drift test above can fail: a schema one migration behind is reported."""
    repo = bare_repo(backend)
    try:
        await run(repo, lambda conn: migrate.upgrade(conn, "0001"), write=True)
        diffs = await run(repo, migrate.drift)
        assert [(d[0], d[3].name) for d in diffs] == [("add_column", "lock_fence")]
    finally:
        await repo.close()


async def test_upgrading_twice_changes_nothing(make_repo: RepoFactory) -> None:
    first = await make_repo()
    await first.init_grid(SYMBOL, Decimal(100))
    await first.save_order(order("c1"))
    second = await make_repo()  # starts, so upgrades again
    assert await second.get_order("c1") == order("c1")
    assert await run(second, migrate.drift) == []


async def test_a_database_made_before_migrations_is_adopted_and_upgraded(
    backend: Backend,
) -> None:
    repo = bare_repo(backend)
    try:
        # the original create_all schema: the tables, no alembic_version, no lock_fence
        await run(repo, _create_legacy, write=True)
        await repo.start()
        assert await run(repo, migrate.current_revision) == migrate.head_revision()
        columns = await run(repo, lambda conn: inspect(conn).get_columns("orders"))
        assert "lock_fence" in {c["name"] for c in columns}
        assert await run(repo, migrate.drift) == []
    finally:
        await repo.close()


def _create_legacy(conn: Connection) -> None:
    m.metadata.create_all(conn)
    conn.execute(text("ALTER TABLE orders DROP COLUMN lock_fence"))


async def test_without_auto_migrate_an_old_schema_refuses_to_start(backend: Backend) -> None:
    repo = bare_repo(backend, auto_migrate=False)
    try:
        with pytest.raises(StartupError, match=r"revision none.*quantmesh db upgrade"):
            await repo.start()
        await run(repo, migrate.upgrade, write=True)
        await repo.start()  # at head now
    finally:
        await repo.close()


async def test_downgrade_to_base_and_back(backend: Backend) -> None:
    from alembic import command

    repo = bare_repo(backend)
    try:
        await repo.start()

        def down(conn: Connection) -> None:
            command.downgrade(migrate.alembic_config(conn), "base")

        await run(repo, down, write=True)
        assert set(await run(repo, lambda conn: inspect(conn).get_table_names())) <= {
            "alembic_version"
        }
        await repo.start()
        assert await run(repo, migrate.drift) == []
    finally:
        await repo.close()
