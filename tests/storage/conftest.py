"""Fixtures for the storage tests: a repository factory per database backend.

Every test that takes ``repo`` or ``make_repo`` runs once per entry of ``BACKENDS``. Only
SQLite exists today; PostgreSQL and MySQL join once their test servers can be started
(each backend fixture yields an empty database and cleans up after itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from quantmesh.storage.engine import DbType, create_engine_for
from quantmesh.storage.repository import SqlRepository

from .support import FakeClock

BACKENDS = ["sqlite"]


@dataclass(frozen=True)
class Backend:
    db_type: DbType
    url: str


RepoFactory = Callable[..., Awaitable[SqlRepository]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "data" / "quantmesh.db"))
    raise AssertionError(f"no test server for {request.param}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_repo(backend: Backend, clock: FakeClock) -> AsyncIterator[RepoFactory]:
    """Repositories on one shared database, each with its own engine (like separate
    instances); all closed at the end of the test."""
    made: list[SqlRepository] = []

    async def factory(exchange: str = "binance") -> SqlRepository:
        engine = create_engine_for(
            backend.db_type, backend.url, pool_size=5, max_overflow=10, pool_recycle=3600
        )
        repo = SqlRepository(engine, exchange, clock=clock)
        made.append(repo)
        await repo.start()
        return repo

    yield factory
    for repo in reversed(made):
        await repo.close()


@pytest.fixture
async def repo(make_repo: RepoFactory) -> SqlRepository:
    return await make_repo()
