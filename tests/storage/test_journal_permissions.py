"""The write buffer's journal and dead-letter files hold the account's trading history:
created 0600 whatever the umask, and an existing file readable by others is tightened
when the journal opens, with a warning."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from quantmesh.storage.journal import DeadLetters, Journal, dead_letter_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def journal_in(directory: Path) -> tuple[Journal, Path, Path]:
    path = directory / "journal.jsonl"
    dead = dead_letter_path(path)
    return Journal(path, DeadLetters(dead)), path, dead


@pytest.mark.parametrize("mask", [0o022, 0o000, 0o002, 0o277], ids=lambda m: f"umask-{m:03o}")
def test_files_are_created_owner_only_whatever_the_umask(
    tmp_path: Path, umask: None, mask: int
) -> None:
    journal, path, dead = journal_in(tmp_path)
    os.umask(mask)
    journal.open()
    journal._write(b"{}\n")
    journal.read(0, 10)  # "{}" is not a record: it goes to the dead-letter file
    journal.close()
    assert path.exists() and dead.exists()
    assert (mode(path), mode(dead)) == (0o600, 0o600)


def test_open_tightens_existing_files_with_a_warning(tmp_path: Path) -> None:
    journal, path, dead = journal_in(tmp_path)
    path.write_bytes(b"")
    dead.write_bytes(b"")
    path.chmod(0o644)
    dead.chmod(0o660)
    with capture_logs() as logs:
        journal.open()
    journal.close()
    assert (mode(path), mode(dead)) == (0o600, 0o600)
    tightened = [e for e in logs if e["event"] == "journal_file_mode_tightened"]
    assert [(e["log_level"], e["path"], e["mode_was"], e["mode"]) for e in tightened] == [
        ("warning", str(path), "0644", "0600"),
        ("warning", str(dead), "0660", "0600"),
    ]


def test_a_private_file_is_left_alone_and_not_logged(tmp_path: Path) -> None:
    journal, path, _ = journal_in(tmp_path)
    path.write_bytes(b"")
    path.chmod(0o600)
    with capture_logs() as logs:
        journal.open()
    journal.close()
    assert mode(path) == 0o600
    assert not [e for e in logs if e["event"].startswith("journal_file_mode")]


def test_only_group_and_other_bits_are_taken_off(tmp_path: Path) -> None:
    """An owner's own bits are not widened: a read-only journal stays read-only (and
    unwritable, which ``open`` reports as it did)."""
    journal, path, _ = journal_in(tmp_path)
    path.write_bytes(b"")
    path.chmod(0o755)
    journal.open()
    journal.close()
    assert mode(path) == 0o700


async def test_a_new_sqlite_database_and_the_simulators_state_are_owner_only(
    tmp_path: Path, umask: None
) -> None:
    from quantmesh.exchange.sim.store import SimStore
    from quantmesh.storage.engine import create_engine_for, to_sqlalchemy_url
    from quantmesh.storage.repository import SqlRepository

    os.umask(0o022)
    db = tmp_path / "data" / "quantmesh.db"
    repository = SqlRepository(
        create_engine_for("sqlite", to_sqlalchemy_url("sqlite", str(db))), "simulated"
    )
    await repository.start()
    try:
        assert await repository.get_open_orders("ETH/USDT") == []
    finally:
        await repository.close()
    store = SimStore(tmp_path / "sim.db")
    store.close()
    wal = [p for p in db.parent.iterdir() if p.name.startswith("quantmesh.db")]
    assert wal and {p.name: mode(p) for p in wal} == {p.name: 0o600 for p in wal}
    assert mode(tmp_path / "sim.db") == 0o600
