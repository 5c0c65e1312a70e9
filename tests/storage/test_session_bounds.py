"""A server's sessions are bounded on the server (``wiring.build_engine``): an instance
frozen (SIGSTOP, a paused VM) inside a transaction on its grid leaves the rows locked, and
the instance that takes the symbol over must find them free once the frozen one's lease
has lapsed - not wait on them until its own statements time out and its start backs off."""

from __future__ import annotations

import contextlib
import itertools
import time
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.config import Settings, parse_settings
from quantmesh.errors import StorageError
from quantmesh.storage.engine import create_engine_for
from quantmesh.wiring import build_engine, build_sql_repository
from tests.servers.postgres import PostgresServer

from .conftest import Backend

pytestmark = pytest.mark.timeout(30)
_LOCK_GRID = "SELECT fence FROM grids WHERE symbol = :symbol FOR UPDATE"
SYMBOL = "ETH/USDT"
LEASE_TTL = 2.0  # an idle open transaction ends after half of it: 1 s
STATEMENT_TIMEOUT = 5.0  # without that bound, the new owner's write would fail after this


async def test_a_grid_left_locked_by_a_frozen_owner_is_free_within_half_a_lease(
    server_backend: Backend,
) -> None:
    settings = parse_settings(
        f"""
database: {{type: {server_backend.db_type}, dsn: "{server_backend.url}",
            statement_timeout: {STATEMENT_TIMEOUT}, buffer_enabled: false}}
coordination: {{lease_ttl: {LEASE_TTL}, check_interval: 0.5}}
trading: {{symbols: [{{symbol: ETHUSDT, price_interval: 10}}]}}
""",
        env={},
    )
    old, new = (build_sql_repository(settings, "binance") for _ in range(2))
    frozen = build_engine(settings)
    assert isinstance(frozen, AsyncEngine)
    await old.start()
    await new.start()
    try:
        await old.init_grid(SYMBOL, Decimal(100))
        assert await old.save_levels(SYMBOL, [], fence=1)
        conn = await frozen.connect()
        await conn.begin()  # the old owner, frozen inside a write to its grid
        await conn.execute(
            text("SELECT fence FROM grids WHERE symbol = :symbol FOR UPDATE"), {"symbol": SYMBOL}
        )
        started = time.monotonic()
        # the new owner's claim of the grid waits for the row, then gets it
        assert await new.save_levels(SYMBOL, [], fence=2)
        waited = time.monotonic() - started
        assert waited < STATEMENT_TIMEOUT, f"waited {waited:.1f} s"
        # the old owner's session is gone; its late write is refused by the new fence
        with pytest.raises(DBAPIError):
            await conn.execute(text("SELECT 1"))
        with contextlib.suppress(DBAPIError):
            await conn.close()
        assert not await old.save_levels(SYMBOL, [], fence=1)
    finally:
        await frozen.dispose()
        await old.close()
        await new.close()


async def test_a_former_owners_session_that_blocks_the_grid_is_ended(
    postgres_server: PostgresServer,
) -> None:
    """PostgreSQL: a session of another instance holding the grid's row for a second (here
    idle in its transaction, as one frozen mid-statement would be active) is ended, and
    the new owner's claim goes through well before its own statement timeout; a session of
    another program is left alone."""
    backend = fresh_backend_url(postgres_server)

    def settings(instance: str) -> Settings:
        return parse_settings(
            f"""
instance: {{id: {instance}}}
database: {{type: postgres, dsn: "{backend}", statement_timeout: {STATEMENT_TIMEOUT},
            buffer_enabled: false}}
coordination: {{lease_ttl: 60, check_interval: 1}}
trading: {{symbols: [{{symbol: ETHUSDT, price_interval: 10}}]}}
""",
            env={},
        )

    new = build_sql_repository(settings("node-b"), "binance")
    former = build_engine(settings("node-a"))  # its idle bound (5 s) does not end it first
    other = create_engine_for("postgres", backend)  # not an instance: never ended
    assert isinstance(former, AsyncEngine) and isinstance(other, AsyncEngine)
    await new.start()
    try:
        await new.init_grid(SYMBOL, Decimal(100))
        assert await new.save_levels(SYMBOL, [], fence=1)
        conn = await former.connect()
        await conn.begin()
        await conn.execute(text(_LOCK_GRID), {"symbol": SYMBOL})
        started = time.monotonic()
        assert await new.save_levels(SYMBOL, [], fence=2)
        assert time.monotonic() - started < STATEMENT_TIMEOUT - 1
        with pytest.raises(DBAPIError):  # its session was ended
            await conn.execute(text("SELECT 1"))
        with contextlib.suppress(DBAPIError):
            await conn.close()
        async with other.connect() as held:
            await held.execute(text(_LOCK_GRID), {"symbol": SYMBOL})
            with pytest.raises(StorageError):  # waited out its statement timeout
                await new.save_levels(SYMBOL, [], fence=3)
    finally:
        await former.dispose()
        await other.dispose()
        await new.close()


_databases = itertools.count(1)


def fresh_backend_url(server: PostgresServer) -> str:
    name = f"qm_blockers_{next(_databases)}"
    server.create_database(name)
    return server.url(name)
