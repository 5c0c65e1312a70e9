"""Persistence of the matching engine's state in its own SQLite file.

Two tables: ``meta`` holds the snapshot header (balances, last prices, counters) as one
JSON row, ``orders`` one JSON row per order keyed by its exchange order id. A save writes
the header and only the orders that changed, in one transaction, so it stays cheap however
many orders the history holds. WAL with ``synchronous=NORMAL``: a commit survives a crash
of the process (not necessarily a power loss) without an fsync per write.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from quantmesh.errors import StartupError

Snapshot = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, record TEXT NOT NULL);
"""
_HEADER_KEY = "header"


class SimStore:
    """The simulated exchange's state file; opens (and creates) it on construction."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # the simulated account's history: owner only
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            conn = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"simulated exchange state {path} cannot be opened: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            raise StartupError(f"simulated exchange state {path} is unusable: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn

    @property
    def path(self) -> Path:
        return self._path

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError(f"simulated exchange state {self._path} is closed")
        return self._conn

    def load(self) -> Snapshot | None:
        """The stored snapshot (header and every order), or None when nothing was saved."""
        conn = self._connection()
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (_HEADER_KEY,)).fetchone()
        if row is None:
            return None
        snapshot: Snapshot = json.loads(row[0])
        snapshot["orders"] = [
            json.loads(record)
            for (record,) in conn.execute("SELECT record FROM orders ORDER BY id")
        ]
        return snapshot

    def save(self, header: Snapshot, orders: Iterable[Snapshot] = ()) -> None:
        """Write the header and upsert ``orders``, atomically. Raises ``sqlite3.Error``."""
        self._write(header, orders, replace_all=False)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the stored state by a full snapshot (header and all orders), atomically."""
        header = {k: v for k, v in snapshot.items() if k != "orders"}
        self._write(header, snapshot.get("orders", []), replace_all=True)

    def _write(self, header: Snapshot, orders: Iterable[Snapshot], replace_all: bool) -> None:
        conn = self._connection()
        rows = [(int(o["exchange_order_id"]), json.dumps(o)) for o in orders]
        header_json = json.dumps(header)
        conn.execute("BEGIN")
        try:
            if replace_all:
                conn.execute("DELETE FROM orders")
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_HEADER_KEY, header_json),
            )
            if rows:
                conn.executemany(
                    "INSERT INTO orders (id, record) VALUES (?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                    rows,
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the file; idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
