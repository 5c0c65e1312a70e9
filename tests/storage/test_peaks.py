"""``SqlPeakStore``: a symbol's equity peak stored and read back on SQLite, PostgreSQL and
MariaDB, exact to the last decimal, one row per exchange and symbol."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quantmesh.errors import StorageRejected
from quantmesh.storage.peaks import SqlPeakStore

from .conftest import RepoFactory
from .support import SYMBOL

PEAK = Decimal("123.456789012345678901")


async def test_a_peak_is_stored_replaced_and_kept_per_exchange_and_symbol(
    make_repo: RepoFactory,
) -> None:
    repo = await make_repo()
    store = SqlPeakStore(repo.runner, "binance")
    assert await store.load_peak(SYMBOL) is None
    await store.save_peak(SYMBOL, PEAK, Decimal(300), 1000.0)
    assert await store.load_peak(SYMBOL) == (PEAK, Decimal(300))
    await store.save_peak(SYMBOL, Decimal("-5.5"), Decimal(30), 2000.0)  # reset by a resume
    other = SqlPeakStore((await make_repo()).runner, "binance")  # another instance
    assert await other.load_peak(SYMBOL) == (Decimal("-5.5"), Decimal(30))
    assert await SqlPeakStore(repo.runner, "okx").load_peak(SYMBOL) is None
    assert await store.load_peak("BTC/USDT") is None


async def test_a_symbol_too_long_for_its_column_is_refused_whole(make_repo: RepoFactory) -> None:
    store = SqlPeakStore((await make_repo()).runner, "binance")
    with pytest.raises(StorageRejected):
        await store.save_peak("X" * 200 + "/USDT", PEAK, Decimal(1), 1.0)
    with pytest.raises(ValueError, match="exchange name"):
        SqlPeakStore((await make_repo()).runner, "")
