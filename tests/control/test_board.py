"""The board of desired states: unknown until read, kept through a failed read, updated at
once by a request made here, and every change reported once."""

from __future__ import annotations

import pytest

from quantmesh.control.board import ControlBoard
from quantmesh.control.desired import Desired
from quantmesh.errors import StorageUnavailable

from .support import MemoryStore


def board_of(store: MemoryStore, changes: list[tuple[str, str]]) -> ControlBoard:
    return ControlBoard(
        store,
        instance="node-1",
        refresh_interval=1.0,
        on_change=lambda symbol, desired: changes.append((symbol, desired.mode)),
        clock=lambda: 1_700_000_000.0,
    )


async def test_unknown_until_read_then_active_for_symbols_nobody_paused() -> None:
    store = MemoryStore()
    store.controls["BTC/USDT"] = Desired("paused", reason="maintenance")
    changes: list[tuple[str, str]] = []
    board = board_of(store, changes)
    assert board.get("ETH/USDT") is None  # never fail open: nothing read yet
    assert await board.refresh()
    assert board.get("ETH/USDT") == Desired()
    state = board.get("BTC/USDT")
    assert state is not None and state.mode == "paused"
    assert changes == [("BTC/USDT", "paused")]


async def test_a_failed_read_keeps_the_last_state_and_a_read_before_any_stays_unknown() -> None:
    store = MemoryStore()
    store.down = True
    board = board_of(store, [])
    assert not await board.refresh()
    assert board.get("ETH/USDT") is None
    store.down = False
    store.controls["ETH/USDT"] = Desired("stop_buys")
    assert await board.refresh()
    store.down = True
    store.controls.clear()
    assert not await board.refresh()
    state = board.get("ETH/USDT")
    assert state is not None and state.mode == "stop_buys"


async def test_a_request_made_here_is_stored_with_its_audit_and_acted_on_at_once() -> None:
    store = MemoryStore()
    changes: list[tuple[str, str]] = []
    board = board_of(store, changes)
    await board.refresh()
    desired = await board.apply("ETH/USDT", "cancel-all", reason="exit", actor="ops@host")
    assert (desired.mode, desired.cancel_orders, desired.at) == ("paused", True, 1_700_000_000.0)
    assert board.get("ETH/USDT") == desired == store.controls["ETH/USDT"]
    assert [(e.symbol, e.action, e.instance) for e in store.audit] == [
        ("ETH/USDT", "cancel-all", "node-1")
    ]
    await board.apply("ETH/USDT", "resume", reason="", actor="ops@host")
    assert changes == [("ETH/USDT", "paused"), ("ETH/USDT", "active")]


async def test_a_request_the_database_refused_changes_nothing() -> None:
    store = MemoryStore()
    board = board_of(store, [])
    await board.refresh()
    store.down = True
    with pytest.raises(StorageUnavailable):
        await board.apply("ETH/USDT", "pause", reason="", actor="ops")
    assert board.get("ETH/USDT") == Desired() and store.audit == []


async def test_a_change_another_instance_recorded_is_picked_up_at_the_next_read() -> None:
    store = MemoryStore()
    changes: list[tuple[str, str]] = []
    board = board_of(store, changes)
    await board.refresh()
    store.controls["ETH/USDT"] = Desired("paused", actor="elsewhere")
    await board.refresh()
    await board.refresh()  # no change: reported once
    assert changes == [("ETH/USDT", "paused")]
