"""``copy_database`` keeps every column as it is, ``trades.level_applied`` included.

SQLite -> PostgreSQL -> MariaDB on the session's servers (the CLI around it is tested in
``tests/cli/test_db.py``).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.grid.state import LevelState
from quantmesh.storage.copy import copy_database
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository

from .conftest import Backend, fresh_backend
from .support import SYMBOL, fill, order


def repository(backend: Backend) -> SqlRepository:
    return SqlRepository(create_engine_for(backend.db_type, backend.url), "binance")


async def test_copy_keeps_which_fills_were_applied_to_their_level(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sqlite = fresh_backend(request, "sqlite", tmp_path)
    source = repository(sqlite)
    await source.start()
    try:
        await source.init_grid(SYMBOL, Decimal(100))
        level = LevelState(0, Decimal("0.1"), Decimal(10), 1)
        done = order("c1", status="filled", filled="0.1")
        assert await source.record_execution(done, [fill("t1")], [level], [], fence=1)
        late = order("c2", status="filled", filled="0.1")  # a fenced replay's facts
        assert await source.record_batch(
            SYMBOL, [late], [fill("t2", client_order_id="c2", ts=1001.0)], [], [], None
        )
        await source.save_fill(fill("t3", client_order_id="c3", ts=1002.0))
        assert await source.unapplied_order_ids(SYMBOL) == ["c2", "c3"]
    finally:
        await source.close()

    postgres = fresh_backend(request, "postgres", tmp_path)
    mariadb = fresh_backend(request, "mysql", tmp_path)
    await copy_database(sqlite.url, postgres.url)
    await copy_database(postgres.url, mariadb.url)
    await copy_database(postgres.url, mariadb.url)  # run again: changes nothing
    for target in (postgres, mariadb):
        repo = repository(target)
        await repo.start()
        try:
            assert await repo.known_trade_ids(SYMBOL, ["t1", "t2", "t3"]) == {"t1"}
            assert await repo.unapplied_order_ids(SYMBOL) == ["c2", "c3"]
        finally:
            await repo.close()
