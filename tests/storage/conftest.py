"""Fixtures for the storage tests: a repository factory per database backend.

Every test that takes ``repo`` or ``make_repo`` runs once per entry of ``BACKENDS``:
SQLite in a temporary file, and a PostgreSQL and a MariaDB server started once per test
session (``tests/servers``), with a fresh empty database per test. Tests that stop or
kill a server start their own (``own_postgres``, ``own_mariadb``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quantmesh.observability.metrics import DbMetrics
from quantmesh.storage.engine import DbType, create_engine_for
from quantmesh.storage.repository import SqlRepository
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer
from tests.support import FakeClock

BACKENDS = ["sqlite", "postgres", "mysql"]
SERVER_BACKENDS = ["postgres", "mysql"]
# For tests of SQLite's own machinery (its database thread, its storage of decimals).
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
_names = itertools.count(1)


@dataclass(frozen=True)
class Backend:
    db_type: DbType
    url: str


RepoFactory = Callable[..., Awaitable[SqlRepository]]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    with MariaDBServer() as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test alone, which it may stop or kill."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def own_mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB server of this test alone, which it may stop or kill."""
    with MariaDBServer() as server:
        yield server


def fresh_backend(request: pytest.FixtureRequest, name: str, tmp_path: Path) -> Backend:
    """An empty database of backend ``name`` for this test (dropped after it)."""
    if name == "sqlite":
        return Backend("sqlite", str(tmp_path / "data" / "quantmesh.db"))
    database = f"qm_test_{next(_names)}"
    server: PostgresServer | MariaDBServer
    if name == "postgres":
        server = request.getfixturevalue("postgres_server")
        db_type: DbType = "postgres"
    elif name == "mysql":
        server = request.getfixturevalue("mariadb_server")
        db_type = "mysql"
    else:
        raise AssertionError(f"no test server for {name}")
    server.create_database(database)
    request.addfinalizer(lambda: server.drop_database(database))
    return Backend(db_type, server.url(database))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return fresh_backend(request, request.param, tmp_path)


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return fresh_backend(request, request.param, tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_repo(backend: Backend, clock: FakeClock) -> AsyncIterator[RepoFactory]:
    """Repositories on one shared database, each with its own engine (like separate
    instances); all closed at the end of the test."""
    made: list[SqlRepository] = []

    async def factory(exchange: str = "binance", metrics: DbMetrics | None = None) -> SqlRepository:
        engine = create_engine_for(
            backend.db_type, backend.url, pool_size=5, max_overflow=10, pool_recycle=3600
        )
        repo = SqlRepository(engine, exchange, clock=clock, metrics=metrics)
        made.append(repo)
        await repo.start()
        return repo

    yield factory
    for repo in reversed(made):
        await repo.close()


@pytest.fixture
async def repo(make_repo: RepoFactory) -> SqlRepository:
    return await make_repo()
