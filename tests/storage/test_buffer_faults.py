"""The write buffer when its own files fail or its writers are cancelled.

Disk full, EIO and unwritable files on the journal; a transient server condition that is
not a lost connection; a writer cancelled in the middle of its append; the cost of
dead-lettering on the event loop; the durability of the files' directory entries.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from quantmesh.errors import StartupError, StorageError, StorageRejected, StorageUnavailable
from quantmesh.grid.state import LevelState
from quantmesh.observability.metrics import Metrics
from quantmesh.storage import replay as replay_module
from quantmesh.storage.base import DurabilityReport, Repository, TradeFilter
from quantmesh.storage.buffer import BufferedRepository
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.journal import Journal
from quantmesh.storage.records import Record, encode
from quantmesh.storage.repository import SqlRepository
from tests.servers.postgres import PostgresServer
from tests.support import FakeClock

from .support import fill, order

ROOT = Path(__file__).resolve().parents[2]


class Outage:
    """Makes the wrapped repository's ``save_fills`` fail as told (the database side is
    not what these tests are about), and passes through once it is over."""

    def __init__(self, inner: SqlRepository) -> None:
        self.error: StorageError | None = StorageUnavailable("save_fills: simulated outage")
        real = inner.save_fills

        async def save_fills(fills: Any) -> None:
            if self.error is not None:
                raise self.error
            await real(fills)

        inner.save_fills = save_fills  # type: ignore[method-assign]


def sqlite_buffer(tmp_path: Path, **kw: Any) -> BufferedRepository:
    engine = create_engine_for("sqlite", str(tmp_path / "q.db"))
    inner = SqlRepository(engine, "binance", clock=FakeClock(), metrics=kw.get("metrics"))
    return BufferedRepository(inner, tmp_path / "journal.jsonl", retry_interval=3600, **kw)


@pytest.fixture
async def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
async def repo(tmp_path: Path, metrics: Metrics) -> AsyncIterator[BufferedRepository]:
    repo = sqlite_buffer(tmp_path, metrics=metrics.db)
    await repo.start()
    yield repo
    await repo.close()


def journaled(repo: BufferedRepository) -> list[str]:
    raw = repo.journal_path.read_bytes() if repo.journal_path.exists() else b""
    return [json.loads(line)["fills"][0]["trade_id"] for line in raw.splitlines()]


async def stored(repo: BufferedRepository) -> list[str]:
    return [f.trade_id for f in await repo.inner.get_trades(TradeFilter(limit=100))]


def failing_fsync(monkeypatch: pytest.MonkeyPatch, path: Path) -> Callable[[], None]:
    """``fsync`` of ``path`` fails with EIO (a dying disk) until the returned call heals it."""
    real = os.fsync
    broken = True

    def fsync(fd: int) -> None:
        if broken and os.readlink(f"/proc/self/fd/{fd}") == str(path):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    def heal() -> None:
        nonlocal broken
        broken = False

    monkeypatch.setattr(os, "fsync", fsync)
    return heal


# --- what the buffer reports --------------------------------------------------------------


def test_the_buffered_repository_satisfies_the_protocol(repo: BufferedRepository) -> None:
    checked: Repository = repo
    for name in (n for n in dir(Repository) if not n.startswith("_")):
        assert callable(getattr(checked, name)), name


async def test_durability_reports_what_the_buffer_holds(
    repo: BufferedRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert repo.durability() == DurabilityReport(0, 0, 0, capacity=10000)
    outage = Outage(repo.inner)
    await repo.save_fill(fill("t1"))
    assert repo.durability() == DurabilityReport(pending=1, in_memory=1, volatile=0, capacity=10000)
    heal = failing_fsync(monkeypatch, repo.journal_path)
    await repo.save_fill(fill("t2"))  # held in memory only
    assert repo.durability() == DurabilityReport(pending=2, in_memory=2, volatile=1, capacity=10000)
    heal()
    outage.error = None
    assert await repo.flush() == 2
    assert repo.durability() == DurabilityReport(0, 0, 0, capacity=10000)


# --- a journal that cannot take a record ---------------------------------------------------

_HALF_WRITE = """
import resource, signal, sys
from pathlib import Path
from quantmesh.storage.journal import DeadLetters, Journal, JournalError
from quantmesh.storage.records import Record
from tests.storage.support import fill
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = Path(sys.argv[1])
journal = Journal(path, DeadLetters(path.with_suffix(".dead")))
journal.open()
journal.append([Record(1, "fills", fills=(fill("t1"),))])
size = path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + size // 2, resource.RLIM_INFINITY))
try:
    journal.append([Record(2, "fills", fills=(fill("t2"),))])
except JournalError as exc:
    print("refused", path.stat().st_size == size, str(path) in str(exc))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
journal.append([Record(3, "fills", fills=(fill("t3"),))])
"""


def test_an_append_the_disk_cuts_short_leaves_nothing_of_it_in_the_journal(
    tmp_path: Path,
) -> None:
    """The file size limit cuts the second record mid-line (as a full disk does). The file
    must not keep its first half for the next append to complete into a record the
    caller was told failed (a subprocess: the limit applies to the whole process)."""
    path = tmp_path / "journal.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_HALF_WRITE), str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["refused", "True", "True"]
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["fills"][0]["trade_id"] for line in lines] == ["t1", "t3"]


async def test_a_write_the_journal_cannot_take_is_kept_in_memory_and_stored_later(
    repo: BufferedRepository, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(repo.inner)
    await repo.save_fill(fill("t1"))  # journaled
    heal = failing_fsync(monkeypatch, repo.journal_path)
    with capture_logs() as logs:
        await repo.save_fill(fill("t2"))  # no exception: the trader goes on
    assert repo.pending == 2
    assert repo.volatile == 1  # t2 would not survive a crash: the trader holds placing
    assert journaled(repo) == ["t1"]  # nothing of t2 stays in the file
    (error,) = [e for e in logs if e["event"] == "db_journal_write_failed"]
    assert error["log_level"] == "error"
    assert str(repo.journal_path) in error["error"] and "Input/output error" in error["error"]
    labels = {"operation": "journal_append", "error": "journal"}
    assert metrics.registry.get_sample_value("quantmesh_db_errors_total", labels) == 1
    heal()
    await repo.save_fill(fill("t3"))
    assert journaled(repo) == ["t1", "t3"]
    outage.error = None
    assert await repo.flush() == 3
    assert await stored(repo) == ["t1", "t2", "t3"]
    assert repo.volatile == 0
    assert repo.journal_path.stat().st_size == 0


async def test_a_write_neither_journal_nor_memory_can_take_fails_naming_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = sqlite_buffer(tmp_path, buffer_size=1)
    await repo.start()
    try:
        Outage(repo.inner)
        await repo.save_fill(fill("t1"))  # fills the memory queue
        failing_fsync(monkeypatch, repo.journal_path)
        with pytest.raises(StorageUnavailable) as info:
            await repo.save_fill(fill("t2"))
        message = str(info.value)
        assert str(repo.journal_path) in message and "Input/output error" in message
        assert "\n" not in message
        assert repo.pending == 1
        assert journaled(repo) == ["t1"]
    finally:
        monkeypatch.undo()
        await repo.close()


# --- errors of the database that are not the data's fault ---------------------------------


async def test_a_write_failing_for_another_reason_than_its_data_is_buffered(
    repo: BufferedRepository,
) -> None:
    """As the replay does: only ``StorageRejected`` reaches the caller."""
    outage = Outage(repo.inner)
    outage.error = StorageError("save_fills failed: InternalError: (9999, 'unforeseen')")
    await repo.save_fill(fill("t1"))
    assert repo.pending == 1 and journaled(repo) == ["t1"]
    outage.error = None
    await repo.flush()
    outage.error = StorageRejected("save_fills failed: value too long")
    with pytest.raises(StorageRejected):
        await repo.save_fill(fill("t2"))
    assert repo.pending == 0
    assert await stored(repo) == ["t1"]


async def test_a_read_only_postgres_primary_is_an_outage_the_buffer_rides_out(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """A demoted primary refuses writes with SQLSTATE 25006; it passes (failover)."""
    database = postgres_server.create_database("qm_read_only")
    try:
        engine = create_engine_for(
            "postgres", postgres_server.url(database), connect_timeout=2, statement_timeout=5
        )
        inner = SqlRepository(engine, "binance", clock=FakeClock())
        repo = BufferedRepository(inner, tmp_path / "journal.jsonl", retry_interval=3600)
        await repo.start()
        sessions = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        try:
            postgres_server.query(
                f"ALTER DATABASE {database} SET default_transaction_read_only = on"
            )
            postgres_server.query(sessions)
            await repo.save_fill(fill("t1"))
            assert repo.pending == 1
            postgres_server.query(f"ALTER DATABASE {database} RESET default_transaction_read_only")
            postgres_server.query(sessions)
            assert await repo.flush() == 1
            assert await stored(repo) == ["t1"]
        finally:
            await repo.close()
    finally:
        postgres_server.drop_database(database)


# --- cancellation ---------------------------------------------------------------------------


async def test_a_writer_cancelled_during_its_append_leaves_the_record_buffered(
    repo: BufferedRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symbol's task group cancels its order loop while the journal append runs in a
    thread, which cannot be stopped: the journaled record must be in the buffer too, or the
    replay skips it and clears the journal that held it."""
    outage = Outage(repo.inner)
    await repo.save_fill(fill("t1"))
    append = Journal.append
    loop = asyncio.get_running_loop()
    appending = asyncio.Event()

    def slow_append(self: Journal, records: Any) -> int:  # a slow disk
        loop.call_soon_threadsafe(appending.set)
        time.sleep(0.2)
        return append(self, records)

    monkeypatch.setattr(Journal, "append", slow_append)
    writer = asyncio.create_task(repo.save_fill(fill("t2")))
    await appending.wait()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    monkeypatch.setattr(Journal, "append", append)
    assert journaled(repo) == ["t1", "t2"]
    assert repo.pending == 2
    await repo.save_fill(fill("t3"))
    outage.error = None
    await repo.flush()
    assert await stored(repo) == ["t1", "t2", "t3"]


# --- dead letters and durability ------------------------------------------------------------


class FsyncLog:
    """Every fsync: whether of a directory, whether on the event-loop thread, and what."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[bool, bool, str]] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            on_loop = threading.current_thread() is threading.main_thread()
            self.calls.append((is_dir, on_loop, os.readlink(f"/proc/self/fd/{fd}")))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def of(self, path: Path) -> list[tuple[bool, bool, str]]:
        return [c for c in self.calls if c[2] == str(path)]


async def test_dead_letters_are_written_off_the_event_loop_with_one_fsync_per_batch(
    repo: BufferedRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(repo.inner)
    await repo.save_fill(fill("good"))
    for n in range(20):
        await repo.save_fill(fill(f"bad{n}", symbol="X" * 100))  # longer than the column
    fsyncs = FsyncLog(monkeypatch)
    outage.error = None
    await repo.flush()
    assert await stored(repo) == ["good"]
    dead = repo.dead_letter_path.read_text().splitlines()
    assert len(dead) == 20
    (written,) = fsyncs.of(repo.dead_letter_path)
    assert written == (False, False, str(repo.dead_letter_path))  # a file, off the loop


async def test_creating_the_journal_and_the_dead_letter_file_syncs_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without it a crash can lose the new directory entry, and the file with it."""
    fsyncs = FsyncLog(monkeypatch)
    repo = BufferedRepository(
        SqlRepository(create_engine_for("sqlite", str(tmp_path / "q.db")), "binance"),
        tmp_path / "buffer" / "journal.jsonl",
        retry_interval=3600,
    )
    await repo.start()
    try:
        assert fsyncs.of(tmp_path)  # the new directory "buffer"
        outage = Outage(repo.inner)
        await repo.save_fill(fill("bad", symbol="X" * 100))
        directory = repo.journal_path.parent
        assert fsyncs.of(directory) and fsyncs.of(repo.journal_path)
        synced_before = len(fsyncs.of(directory))
        outage.error = None
        await repo.flush()
        assert repo.dead_letter_path.exists()
        assert len(fsyncs.of(directory)) == synced_before + 1  # the new dead-letter file
    finally:
        await repo.close()


@pytest.fixture
def unwritable_journal(tmp_path: Path) -> Path:
    journal = tmp_path / "journal.jsonl"
    if os.geteuid() == 0:  # root writes past permission bits, not into this kernel file
        target = Path("/sys/kernel/notes")
        if not target.exists():
            pytest.skip("needs /sys/kernel/notes, a file even root cannot write")
        journal.symlink_to(target)
    else:
        journal.write_bytes(b"")
        journal.chmod(0o444)
    return journal


async def test_an_existing_journal_that_cannot_be_written_is_a_startup_error(
    tmp_path: Path, unwritable_journal: Path
) -> None:
    journal = unwritable_journal
    repo = sqlite_buffer(tmp_path)
    try:
        with pytest.raises(StartupError) as info:
            await repo.start()
    finally:
        await repo.inner.close()
    message = str(info.value)
    assert str(journal) in message and "\n" not in message


# --- a record that can never succeed ----------------------------------------------------------


async def test_a_record_failing_the_same_way_for_long_is_set_aside_keeping_its_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal left for a grid the database no longer has (restored from an older
    backup): its execution fails every round with "not initialised" and used to block
    every write after it, and every read of every symbol, for good."""
    journal = tmp_path / "journal.jsonl"
    execution = Record(
        1,
        "execution",
        symbol="BTC/USDT",
        orders=(order("c1", symbol="BTC/USDT", status="filled", filled="0.3"),),
        fills=(fill("x1", symbol="BTC/USDT", client_order_id="c1"),),
        levels=(LevelState(1, Decimal("0.3"), Decimal(30), 1),),
        fence=1,
    )
    later = [Record(n, "fills", fills=(fill(f"t{n}"),)) for n in range(2, 5)]
    journal.write_bytes(b"".join(encode(r) for r in (execution, *later)))
    monkeypatch.setattr(replay_module, "STUCK_ROUNDS", 3)
    monkeypatch.setattr(replay_module, "STUCK_SECONDS", 3600.0)
    repo = sqlite_buffer(tmp_path)
    await repo.start()  # round 1
    try:
        for _ in range(3):  # rounds 2 to 4: enough rounds, not yet long enough
            with pytest.raises(StorageUnavailable, match="is not initialised"):
                await repo.flush()
        assert repo.pending == 4
        monkeypatch.setattr(replay_module, "STUCK_SECONDS", 0.0)
        with capture_logs() as logs:
            assert await repo.flush() == 4
        assert repo.pending == 0
        assert await stored(repo) == ["x1", "t2", "t3", "t4"]  # the facts are kept
        assert (await repo.get_order("c1")) == execution.orders[0]
        (dead,) = [json.loads(line) for line in repo.dead_letter_path.read_text().splitlines()]
        assert dead["record"]["seq"] == 1
        assert "is not initialised" in dead["reason"] and "fills" in dead["reason"]
        assert any(e["event"] == "db_replay_stuck" and e["log_level"] == "error" for e in logs)
    finally:
        await repo.close()
