"""``quantmesh db upgrade``, ``quantmesh db copy``, and database failures at ``quantmesh run``.

The commands run as real subprocesses against SQLite and against PostgreSQL and MariaDB
servers started for this module.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.grid.state import LevelState
from quantmesh.storage import migrate
from quantmesh.storage.base import TradeFilter
from quantmesh.storage.engine import DbType, create_engine_for
from quantmesh.storage.repository import SqlRepository
from tests.cli.support import CONFIG_NAME, changed, fast_config, plain_lines, run_cli, write_config
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.storage.support import SYMBOL, fill, order, round_trip
from tests.support import free_port

PASSWORD = "db-s3cret-pw"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDBServer]:
    with MariaDBServer() as server:
        yield server


def repository(db_type: DbType, url: str) -> SqlRepository:
    return SqlRepository(create_engine_for(db_type, url), "binance")


async def fill_database(db_type: DbType, url: str, trades: int) -> None:
    repo = repository(db_type, url)
    await repo.start()
    try:
        await repo.init_grid(SYMBOL, Decimal(100))
        await repo.save_orders([order(f"c{n}", created_at=1000.0 + n) for n in range(50)])
        await repo.save_fills([fill(f"t{n:05d}", ts=2000.0 - n) for n in range(trades)])
        level = LevelState(2, Decimal("0.3"), Decimal("30.01"), 4)
        await repo.record_execution(
            order("c1", status="filled", filled="0.3"), [], [level], [round_trip()], 1
        )
        await repo.save_last_price(SYMBOL, Decimal("101.5"), 3000.0)
    finally:
        await repo.close()


async def snapshot(db_type: DbType, url: str) -> tuple[object, ...]:
    repo = repository(db_type, url)
    await repo.start()
    try:
        return (
            await repo.get_trades(TradeFilter(limit=100_000)),
            await repo.get_open_orders(SYMBOL),
            await repo.get_order("c1"),
            await repo.load_grid(SYMBOL),
            await repo.get_round_trips(SYMBOL),
            await repo.summaries(),
        )
    finally:
        await repo.close()


def test_db_upgrade_migrates_the_configured_database(tmp_path: Path) -> None:
    write_config(tmp_path, fast_config())
    first = run_cli(["db", "upgrade", "-c", CONFIG_NAME], tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"database schema upgraded from revision none to {migrate.HEAD}\n"
    again = run_cli(["db", "upgrade", "-c", CONFIG_NAME], tmp_path)
    assert again.stdout == f"database schema already at revision {migrate.HEAD}\n"
    assert (tmp_path / "data" / "quantmesh.db").exists()


def test_db_upgrade_of_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=q password={PASSWORD} dbname=q"
    config = changed(fast_config(), {"database.type": "postgres", "database.dsn": dsn})
    write_config(tmp_path, config)
    result = run_cli(["db", "upgrade", "-c", CONFIG_NAME], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr_lines
    assert line.startswith("quantmesh: error: upgrade: database unavailable")
    assert PASSWORD not in result.stderr


def test_db_copy_sqlite_to_postgres_to_mariadb(
    tmp_path: Path, postgres: PostgresServer, mariadb: MariaDBServer
) -> None:
    sqlite_path = str(tmp_path / "source.db")
    asyncio.run(fill_database("sqlite", sqlite_path, trades=2500))
    pg_url = postgres.url(postgres.create_database("copy_target"))
    maria_url = mariadb.url(mariadb.create_database("copy_target"))

    to_pg = run_cli(
        ["db", "copy", "--from", sqlite_path, "--to", pg_url, "--batch-size", "1000"], tmp_path
    )
    assert to_pg.returncode == 0, to_pg.stderr
    assert "trades: 2500 rows" in to_pg.stdout
    assert "row counts verified" in to_pg.stdout
    assert "trades" in to_pg.stderr and "2500/2500 (100%)" in to_pg.stderr  # progress bar

    # the seed's MySQL DSN form works as a copy target too
    go_dsn = f"root@tcp(127.0.0.1:{mariadb.port})/copy_target?charset=utf8mb4"
    to_maria = run_cli(["db", "copy", "--from", pg_url, "--to", go_dsn], tmp_path)
    assert to_maria.returncode == 0, to_maria.stderr
    again = run_cli(["db", "copy", "--from", pg_url, "--to", maria_url], tmp_path)  # re-run
    assert again.returncode == 0, again.stderr
    assert again.stdout == to_maria.stdout.replace(
        to_maria.stdout.splitlines()[-1], again.stdout.splitlines()[-1]
    )

    original = asyncio.run(snapshot("sqlite", sqlite_path))
    assert asyncio.run(snapshot("postgres", pg_url)) == original
    assert asyncio.run(snapshot("mysql", maria_url)) == original


def test_db_copy_refuses_mismatched_counts(tmp_path: Path, postgres: PostgresServer) -> None:
    """A target holding other rows cannot be verified: the copy says which table differs."""
    source = str(tmp_path / "a.db")
    other = str(tmp_path / "b.db")
    asyncio.run(fill_database("sqlite", source, trades=10))
    asyncio.run(fill_database("sqlite", other, trades=20))
    result = run_cli(["db", "copy", "--from", source, "--to", other, "--no-progress"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr_lines
    assert "row counts differ after the copy: trades: 10 in the source, 20 in the target" in line


# --- quantmesh run: the database at start ---------------------------------------------


@pytest.mark.parametrize(
    ("db_type", "dsn", "expected"),
    [
        (
            "postgres",
            f"host=127.0.0.1 port={free_port()} user=q password={PASSWORD} dbname=q",
            "cannot use the postgresql database postgresql+asyncpg://q:***@127.0.0.1",
        ),
        (
            "mysql",
            f"q:{PASSWORD}@tcp(127.0.0.1:{free_port()})/q?charset=utf8mb4",
            "cannot use the mysql database mysql+aiomysql://q:***@127.0.0.1",
        ),
        ("mysql", f"q:{PASSWORD}@tcp(db:http)/q", "the mysql DSN has an invalid port"),
        ("postgres", f"host=db password={PASSWORD} db=q", "DSN key 'db' is not supported"),
    ],
    ids=["postgres-unreachable", "mysql-unreachable", "mysql-bad-dsn", "postgres-bad-dsn"],
)
def test_a_database_that_cannot_be_used_at_start_is_one_clear_line(
    tmp_path: Path, db_type: str, dsn: str, expected: str
) -> None:
    config = changed(
        fast_config(),
        {"database.type": db_type, "database.dsn": dsn, "database.connect_timeout": 2},
    )
    write_config(tmp_path, config)
    result = run_cli(["run", "-c", CONFIG_NAME], tmp_path, timeout=20)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = plain_lines(result.stderr)
    assert line.startswith("quantmesh: error: ")
    assert expected in line
    assert PASSWORD not in result.stderr


# --- quantmesh run: the database goes away while trading --------------------------------


def test_the_daemon_trades_on_through_a_database_outage_and_loses_no_fill(
    tmp_path: Path,
) -> None:
    from tests.cli.support import Daemon

    with PostgresServer() as pg:
        pg.create_database("qm")
        dsn = f"host=127.0.0.1 port={pg.port} user=postgres dbname=qm"
        config = changed(
            fast_config(),
            {"database.type": "postgres", "database.dsn": dsn, "database.retry_interval": 1},
        )
        with Daemon(write_config(tmp_path, config), tmp_path) as daemon:
            assert daemon.wait_for("order_filled", 30, count=2), daemon.stderr[-3000:]
            pg.stop()
            before = len(daemon.events("order_filled"))
            assert daemon.wait_for("order_filled", 20, count=before + 5), "trading stopped"
            assert daemon.events("db_unavailable_buffering")
            pg.start()
            assert daemon.wait_for("db_buffer_replayed", 20, where=lambda e: e["pending"] == 0)
            code, _ = daemon.stop(signal.SIGTERM, 20)
            assert code == 0, daemon.stderr[-3000:]
            fills = len(daemon.events("order_filled"))
            assert daemon.plain_lines() == []
        ((stored, distinct),) = pg.query(
            "SELECT count(*), count(DISTINCT trade_id) FROM trades", "qm"
        )
    assert int(stored) == int(distinct) == fills  # every fill once, none lost
    assert not (tmp_path / "data" / "journal.jsonl").read_bytes()
