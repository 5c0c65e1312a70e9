"""The write buffer's files: the journal of buffered writes and the dead-letter file.

The journal is append-only JSON lines (``records.encode``), fsynced after every append,
so a write the caller was told is buffered survives a crash (kill -9 included). It is
emptied once everything in it reached the database. A line that cannot be read (a torn
last line after a crash, a damaged file) is logged, copied to the dead-letter file, and
skipped; the lines after it are still read.

An append is all or nothing, so a file the caller was told failed never holds that record:

- the lines go out with ``os.write`` on an unbuffered ``O_APPEND`` descriptor (no library
  buffer can keep half a line for the next append to complete), then ``fsync``;
- if any of it fails (disk full, EIO, permissions) the file is cut back to its size
  before the append and ``JournalError`` names the file and the OS error;
- if even the cut fails, the next append makes it first.

The dead-letter file holds what the database refused for good (constraint or data errors,
grid state under a stale fence, unreadable journal lines), one JSON object per line with
the reason, for an operator to look at. Nothing in it is retried. Entries are written in
batches, one fsync per batch.

Durability and permissions:

- a file or directory created here is made durable with an fsync of its parent
  directory: without it a crash can lose the directory entry, and with it the whole file;
- both files hold the account's trading history: they are created 0600 (owner read and
  write only, whatever the umask), and an existing one readable or writable by group or
  others is tightened to its owner's bits when the journal opens, with a warning.

Blocking file I/O: callers run these methods in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from quantmesh.errors import StartupError, StorageUnavailable
from quantmesh.storage.records import CorruptRecord, Record, decode, encode

log = structlog.get_logger(__name__)

_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
PRIVATE_MODE = 0o600  # the mode of the journal and dead-letter files


class JournalError(StorageUnavailable):
    """A file of the write buffer cannot be written; the message names it and the OS error."""


def dead_letter_path(journal_path: Path) -> Path:
    """``journal.jsonl`` -> ``journal.dead.jsonl``, next to the journal."""
    return journal_path.with_name(f"{journal_path.stem}.dead{journal_path.suffix or '.jsonl'}")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records read from the journal, and the offset after the last line read."""

    records: list[Record]
    next_offset: int
    at_end: bool


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter file: why, and the record or the raw line."""

    reason: str
    record: Record | None = None
    raw: bytes | None = None

    def encode(self) -> bytes:
        entry: dict[str, Any] = {"at": time.time(), "reason": self.reason}
        if self.record is not None:
            entry["record"] = json.loads(encode(self.record))
        if self.raw is not None:
            entry["raw"] = self.raw.decode("utf-8", errors="replace")
        return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def make_directory(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each made durable in its parent."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        sync_directory(created.parent)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_for_append(path: Path) -> int:
    """An unbuffered append descriptor on ``path``; a file created here is made durable
    and private (``PRIVATE_MODE``, whatever the umask)."""
    created = not path.exists()
    fd = os.open(path, _APPEND_FLAGS, PRIVATE_MODE)
    if created:
        try:
            os.fchmod(fd, PRIVATE_MODE)  # the umask may have taken bits off; never adds
            sync_directory(path.parent)
        except OSError:
            os.close(fd)
            raise
    return fd


def make_private(path: Path, what: str) -> None:
    """Take the group and other bits off an existing ``path``, with a warning when there
    were any; a file that cannot be changed (another owner) is logged and left."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(path, mode & 0o700)
    except OSError as exc:
        log.warning(
            "journal_file_mode_not_tightened",
            file=what,
            path=str(path),
            mode=f"{mode:04o}",
            error=exc.strerror or str(exc),
            hint="it holds the account's trading history: make it readable by its owner only",
        )
        return
    log.warning(
        "journal_file_mode_tightened",
        file=what,
        path=str(path),
        mode_was=f"{mode:04o}",
        mode=f"{mode & 0o700:04o}",
    )


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class DeadLetters:
    """Append-only file of writes that will never be retried, with the reason."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, reason: str, record: Record | None = None, raw: bytes | None = None) -> None:
        self.add_many([DeadLetter(reason, record, raw)])

    def add_many(self, entries: Sequence[DeadLetter]) -> None:
        """Append ``entries`` with one fsync; ``JournalError`` if the file cannot take them."""
        if not entries:
            return
        data = b"".join(entry.encode() for entry in entries)
        try:
            make_directory(self.path.parent)
            fd = open_for_append(self.path)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalError(
                f"cannot write the dead-letter file {self.path}: {exc.strerror or exc}"
            ) from exc

    def check(self) -> None:
        """``StartupError`` unless an existing dead-letter file can be appended to; an
        existing one readable by others is made private."""
        _check_appendable(self.path, "dead-letter file")
        make_private(self.path, "dead-letter file")


class Journal:
    """The journal file; see the module docstring."""

    def __init__(self, path: Path, dead: DeadLetters) -> None:
        self.path = path
        self._dead = dead
        self._fd: int | None = None
        self._cut_to: int | None = None  # a failed append left bytes after this offset

    def open(self) -> None:
        """Check the journal (and the dead-letter file) can be written; end a torn last
        line a crash left.

        The file itself is created by the first append: a run that never buffers leaves
        none behind.
        """
        directory = self.path.parent
        try:
            make_directory(directory)
        except OSError as exc:
            raise StartupError(
                f"cannot create the directory of the write-buffer journal {self.path}: "
                f"{exc.strerror or exc}; check database.journal_path"
            ) from exc
        if self.path.is_dir():
            raise StartupError(
                f"the write-buffer journal {self.path} is a directory; check database.journal_path"
            )
        try:  # the directory must take new files: the journal, the dead-letter file
            with tempfile.TemporaryFile(dir=directory, prefix=".quantmesh-probe-"):
                pass
        except OSError as exc:
            raise StartupError(
                f"the directory of the write-buffer journal {self.path} is not writable: "
                f"{exc.strerror or exc}; check database.journal_path"
            ) from exc
        _check_appendable(self.path, "write-buffer journal")
        make_private(self.path, "write-buffer journal")
        self._dead.check()
        size = self.size()
        if size:
            with self.path.open("rb") as src:
                src.seek(size - 1)
                torn = src.read(1) != b"\n"
            if torn:  # a crash mid-line: the next record starts on a line of its own
                try:
                    self._write(b"\n")
                except JournalError as exc:
                    raise StartupError(f"{exc}; check database.journal_path") from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, records: Sequence[Record]) -> int:
        """Write ``records`` durably; return the offset the first one starts at.

        All or nothing: on failure ``JournalError`` and the file holds none of them.
        """
        return self._write(b"".join(encode(r) for r in records))

    def _write(self, data: bytes) -> int:
        try:
            fd = self._descriptor()
            if self._cut_to is not None:  # what an earlier failed append left
                os.ftruncate(fd, self._cut_to)
                self._cut_to = None
            offset = os.fstat(fd).st_size
        except OSError as exc:
            raise self._error(exc) from exc
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            self._cut_to = offset
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
                self._cut_to = None
            except OSError as cut:
                log.error("journal_cut_failed", path=str(self.path), error=str(cut))
            raise self._error(exc) from exc
        return offset

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = open_for_append(self.path)
        return self._fd

    def _error(self, exc: OSError) -> JournalError:
        return JournalError(
            f"cannot write the write-buffer journal {self.path}: {exc.strerror or exc}"
        )

    def read(self, offset: int, limit: int) -> Chunk:
        """Up to ``limit`` records from ``offset``; unreadable lines are skipped (logged and
        dead-lettered, in one batch)."""
        records: list[Record] = []
        corrupt: list[DeadLetter] = []
        if not self.path.exists():
            return Chunk(records, offset, True)
        with self.path.open("rb") as src:
            src.seek(offset)
            end, at_end = offset, True
            while len(records) < limit:
                start = src.tell()
                line = src.readline()
                if not line:
                    end, at_end = start, True
                    break
                if not line.strip():
                    continue
                try:
                    records.append(decode(line))
                except CorruptRecord as exc:
                    log.error(
                        "journal_line_corrupt", path=str(self.path), offset=start, error=str(exc)
                    )
                    corrupt.append(DeadLetter(f"unreadable journal line: {exc}", raw=line))
            else:
                end = src.tell()
                at_end = not src.read(1)
        self._dead.add_many(corrupt)
        return Chunk(records, end, at_end)

    def count_lines(self, offset: int) -> int:
        with self.path.open("rb") as src:
            src.seek(offset)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: src.read(1 << 20), b""))

    def clear(self) -> None:
        """Everything reached the database: start the journal afresh."""
        try:
            fd = self._descriptor()
            os.ftruncate(fd, 0)
            os.fsync(fd)
        except OSError as exc:
            raise self._error(exc) from exc
        self._cut_to = None


def _check_appendable(path: Path, what: str) -> None:
    if not path.exists():
        return
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise StartupError(
            f"the {what} {path} cannot be written: {exc.strerror or exc}; "
            "check its permissions or database.journal_path"
        ) from exc
