"""A server's sessions are bounded on the server (``wiring.build_engine``): an instance
frozen (SIGSTOP, a paused VM) inside a transaction on its grid leaves the rows locked, and
the instance that takes the symbol over must find them free once the frozen one's lease
has lapsed - not wait on them until its own statements time out and its start backs off."""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from quantmesh.config import parse_settings
from quantmesh.wiring import build_engine, build_sql_repository

from .conftest import Backend

pytestmark = pytest.mark.timeout(30)
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
