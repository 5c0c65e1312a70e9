"""The simulated exchange's SQLite state file."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from quantmesh.domain import OrderRequest
from quantmesh.errors import StartupError
from quantmesh.exchange.sim.matching import MatchingEngine
from quantmesh.exchange.sim.store import SimStore
from tests.exchange.support import ETH
from tests.support import FakeClock

D = Decimal


def engine(clock: FakeClock) -> MatchingEngine:
    return MatchingEngine({ETH.symbol: ETH}, {"USDT": D(1000), "ETH": D(1)}, D("0.001"), clock)


def test_a_new_file_holds_nothing_and_its_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "sim.db"
    store = SimStore(path)
    try:
        assert store.load() is None
        assert path.exists()
        mode = store._connection().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        store.close()
    store.close()  # idempotent


def test_incremental_saves_rebuild_the_full_snapshot(tmp_path: Path, clock: FakeClock) -> None:
    eng = engine(clock)
    store = SimStore(tmp_path / "sim.db")
    try:
        eng.on_price("ETH/USDT", D(2000))
        a = eng.place(OrderRequest("ETH/USDT", "buy", D(1990), D("0.01"), "a"))
        store.save(eng.snapshot_header(), [eng.order_snapshot(a.exchange_order_id)])
        b = eng.place(OrderRequest("ETH/USDT", "buy", D(1980), D("0.01"), "b"))
        store.save(eng.snapshot_header(), [eng.order_snapshot(b.exchange_order_id)])
        (update,) = eng.on_price("ETH/USDT", D(1985))  # fills a only
        store.save(eng.snapshot_header(), [eng.order_snapshot(update.order.exchange_order_id)])
        assert store.load() == eng.snapshot()
    finally:
        store.close()

    reopened = SimStore(tmp_path / "sim.db")
    try:
        restored = engine(clock)
        snapshot = reopened.load()
        assert snapshot is not None
        restored.restore(snapshot)
        assert restored.all_orders() == eng.all_orders()
        assert [o.status for o in restored.all_orders()] == ["filled", "open"]
        assert restored.balances() == eng.balances()
    finally:
        reopened.close()


def test_save_snapshot_replaces_everything(tmp_path: Path, clock: FakeClock) -> None:
    eng = engine(clock)
    eng.place(OrderRequest("ETH/USDT", "buy", D(1990), D("0.01"), "a"))
    store = SimStore(tmp_path / "sim.db")
    try:
        store.save_snapshot(eng.snapshot())
        assert store.load() == eng.snapshot()
        fresh = engine(clock)
        store.save_snapshot(fresh.snapshot())
        assert store.load() == fresh.snapshot()
    finally:
        store.close()


def test_a_failed_save_changes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    eng = engine(clock)
    store = SimStore(tmp_path / "sim.db")
    try:
        store.save(eng.snapshot_header())
        before = store.load()
        with pytest.raises(OverflowError):  # fails after the header was written
            store.save({"changed": True}, [{"exchange_order_id": str(2**70)}])
        assert store.load() == before
        store.save(eng.snapshot_header())  # still usable afterwards
    finally:
        store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.save(eng.snapshot_header())


def test_unusable_paths_raise_startup_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StartupError, match="cannot be opened"):
        SimStore(blocker / "sim.db")  # its parent is a file
    with pytest.raises(StartupError, match="cannot be opened"):
        SimStore(tmp_path)  # a directory
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(StartupError, match="unusable"):
        SimStore(garbage)
