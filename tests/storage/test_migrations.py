"""Alembic migrations: an empty database upgraded to head matches the models exactly."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text

from quantmesh.errors import StartupError
from quantmesh.storage import migrate
from quantmesh.storage import models as m
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository

from .conftest import Backend, RepoFactory, fresh_backend
from .support import SYMBOL, fill, order


async def run(repo: SqlRepository, fn: Any, *, write: bool = False) -> Any:
    return await repo._runner.run("test", fn, write=write)


def bare_repo(backend: Backend, **kwargs: Any) -> SqlRepository:
    return SqlRepository(create_engine_for(backend.db_type, backend.url), "binance", **kwargs)


def schema_of(conn: Connection) -> dict[str, Any]:
    """What a database's tables are made of, comparably: columns (name, type, null),
    primary key, indexes and unique constraints, with their names."""
    inspector = inspect(conn)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
            ],
            "primary": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
        }
    return schema


async def test_an_empty_database_created_at_start_is_what_the_scripts_build(
    backend: Backend, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A start creates an empty database's tables from the models (no Alembic); the
    scripts, run from nothing, build the very same schema."""
    created = bare_repo(backend)
    try:
        await created.start()
        assert await run(created, migrate.current_revision) == migrate.HEAD
        from_models = await run(created, schema_of)
    finally:
        await created.close()
    other = fresh_backend(request, backend.db_type, tmp_path / "scripted")
    scripted = bare_repo(other)
    try:
        await run(scripted, lambda conn: migrate.upgrade(conn, migrate.HEAD), write=True)
        assert await run(scripted, migrate.current_revision) == migrate.HEAD
        assert await run(scripted, schema_of) == from_models
    finally:
        await scripted.close()


async def test_an_empty_database_upgraded_to_head_has_no_drift_from_the_models(
    backend: Backend,
) -> None:
    repo = bare_repo(backend)
    try:
        await run(repo, lambda conn: migrate.upgrade(conn, migrate.HEAD), write=True)
        assert await run(repo, migrate.current_revision) == migrate.head_revision()
        assert await run(repo, migrate.drift) == []
        tables = set(await run(repo, lambda conn: inspect(conn).get_table_names()))
        assert tables == {*m.metadata.tables, "alembic_version"}
    finally:
        await repo.close()


def described(diffs: list[Any]) -> list[tuple[str, str]]:
    """Alembic's diff tuples as (kind, column or index name)."""
    named = []
    for diff in diffs:
        kind = diff[0]
        if kind == "add_column":
            named.append((kind, f"{diff[2]}.{diff[3].name}"))
        elif kind in ("add_table", "remove_table", "add_index", "remove_index"):
            named.append((kind, diff[1].name))
        else:
            named.append((kind, repr(diff[1:])))
    return sorted(named)


# what revisions 0004, 0005 and 0006 add
_LEASE_TABLE = [("add_table", "lock_leases")]
_PEAK_TABLE = [("add_table", "risk_peaks"), *_LEASE_TABLE]
_CONTROL_TABLES = [
    ("add_index", "ix_control_audit_exchange_symbol_id"),
    ("add_table", "control_audit"),
    ("add_table", "symbol_controls"),
    *_PEAK_TABLE,
]


@pytest.mark.parametrize(
    ("revision", "missing"),
    [
        (
            "0001",
            [
                ("add_column", "orders.lock_fence"),
                ("add_column", "trades.level_applied"),
                ("add_index", "ix_trades_exchange_symbol_level_applied"),
                *_CONTROL_TABLES,
            ],
        ),
        (
            "0002",
            [
                ("add_column", "trades.level_applied"),
                ("add_index", "ix_trades_exchange_symbol_level_applied"),
                *_CONTROL_TABLES,
            ],
        ),
        ("0003", _CONTROL_TABLES),
        ("0004", _PEAK_TABLE),
        ("0005", _LEASE_TABLE),
    ],
)
async def test_the_drift_check_sees_what_a_revision_lacks(
    backend: Backend, revision: str, missing: list[tuple[str, str]]
) -> None:
    """The no-drift test above can fail: a schema behind the head is reported."""
    repo = bare_repo(backend)
    try:
        await run(repo, lambda conn: migrate.upgrade(conn, revision), write=True)
        assert described(await run(repo, migrate.drift)) == sorted(missing)
    finally:
        await repo.close()


async def test_upgrading_keeps_the_fills_stored_before_as_applied(backend: Backend) -> None:
    """Fills stored before revision 0003 were stored with their levels: after the upgrade
    they are known and none is reported unapplied; new fills get the column's rules."""
    repo = bare_repo(backend)
    try:
        await run(repo, lambda conn: migrate.upgrade(conn, "0002"), write=True)

        def insert_old_fills(conn: Connection) -> None:
            # the 0002 schema has no level_applied: the insert names only its columns
            conn.execute(
                m.trades.insert(),
                [_old_trade(f"t{n}", f"c{n % 2}") for n in range(3)],
            )

        await run(repo, insert_old_fills, write=True)
        await repo.start()  # upgrades to the head
        assert await run(repo, migrate.current_revision) == migrate.head_revision()
        assert await repo.known_trade_ids(SYMBOL, ["t0", "t1", "t2"]) == {"t0", "t1", "t2"}
        assert await repo.unapplied_order_ids(SYMBOL) == []
        await repo.save_fills([fill("t9", client_order_id="c9")])
        assert await repo.known_trade_ids(SYMBOL, ["t0", "t9"]) == {"t0"}
        assert await repo.unapplied_order_ids(SYMBOL) == ["c9"]
        assert await run(repo, migrate.drift) == []
    finally:
        await repo.close()


def _old_trade(trade_id: str, client_order_id: str) -> dict[str, Any]:
    return {
        "exchange": "binance",
        "symbol": SYMBOL,
        "trade_id": trade_id,
        "side": "buy",
        "price": Decimal(100),
        "amount": Decimal("0.1"),
        "fee": Decimal(0),
        "fee_currency": "USDT",
        "client_order_id": client_order_id,
        "exchange_order_id": "x-" + client_order_id,
        "ts": 1000.0,
    }


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
        # the original create_all schema: the tables, no alembic_version, no lock_fence,
        # no level_applied, no control tables
        await run(repo, _create_legacy, write=True)
        await repo.start()
        assert await run(repo, migrate.current_revision) == migrate.head_revision()
        columns = await run(repo, lambda conn: inspect(conn).get_columns("orders"))
        assert "lock_fence" in {c["name"] for c in columns}
        columns = await run(repo, lambda conn: inspect(conn).get_columns("trades"))
        assert "level_applied" in {c["name"] for c in columns}
        assert await run(repo, migrate.drift) == []
    finally:
        await repo.close()


def _create_legacy(conn: Connection) -> None:
    m.metadata.create_all(conn, tables=[m.grids, m.orders, m.trades, m.round_trips, m.grid_levels])
    conn.execute(text("ALTER TABLE orders DROP COLUMN lock_fence"))
    (applied,) = [ix for ix in m.trades.indexes if "level_applied" in ix.columns]
    applied.drop(conn)
    conn.execute(text("ALTER TABLE trades DROP COLUMN level_applied"))


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


def test_the_head_this_version_expects_is_the_newest_script() -> None:
    assert migrate.HEAD == migrate.scripts_head() == migrate.head_revision()


def test_a_start_with_nothing_to_migrate_does_not_load_alembic(tmp_path: Path) -> None:
    """The first start creates the tables, the next one checks the revision with one
    query; neither imports Alembic (a process's start-up time and memory)."""
    script = (
        "import asyncio, sys\n"
        "from quantmesh.storage.engine import create_engine_for, to_sqlalchemy_url\n"
        "from quantmesh.storage.repository import SqlRepository\n"
        "async def main():\n"
        f"    url = to_sqlalchemy_url('sqlite', {str(tmp_path / 'q.db')!r})\n"
        "    repo = SqlRepository(create_engine_for('sqlite', url), 'binance')\n"
        "    await repo.start()\n"
        "    await repo.close()\n"
        "asyncio.run(main())\n"
        "print(any(name.startswith('alembic') for name in sys.modules))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
        )
        for _ in range(2)
    ]
    assert [r.stdout.splitlines()[-1] for r in runs] == ["False", "False"], [r.stderr for r in runs]
