"""The write buffer's files: the journal of buffered writes and the dead-letter file.

The journal is append-only JSON lines (``records.encode``), fsynced after every append,
so a write the caller was told is buffered survives a crash (kill -9 included). It is
emptied once everything in it reached the database. A line that cannot be read (a torn
last line after a crash, a damaged file) is logged, copied to the dead-letter file, and
skipped; the lines after it are still read.

The dead-letter file holds what the database refused for good (constraint or data errors,
grid state under a stale fence, unreadable journal lines), one JSON object per line with
the reason, for an operator to look at. Nothing in it is retried.

Blocking file I/O: callers run these methods in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from quantmesh.errors import StartupError
from quantmesh.storage.records import CorruptRecord, Record, decode, encode

log = structlog.get_logger(__name__)


def dead_letter_path(journal_path: Path) -> Path:
    """``journal.jsonl`` -> ``journal.dead.jsonl``, next to the journal."""
    return journal_path.with_name(f"{journal_path.stem}.dead{journal_path.suffix or '.jsonl'}")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records read from the journal, and the offset after the last line read."""

    records: list[Record]
    next_offset: int
    at_end: bool


class DeadLetters:
    """Append-only file of writes that will never be retried, with the reason."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, reason: str, record: Record | None = None, raw: bytes | None = None) -> None:
        entry: dict[str, Any] = {"at": time.time(), "reason": reason}
        if record is not None:
            entry["record"] = json.loads(encode(record))
        if raw is not None:
            entry["raw"] = raw.decode("utf-8", errors="replace")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as out:
            out.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())


class Journal:
    """The journal file; see the module docstring."""

    def __init__(self, path: Path, dead: DeadLetters) -> None:
        self.path = path
        self._dead = dead
        self._out: IO[bytes] | None = None

    def open(self) -> None:
        """Check the journal can be written; end a torn last line a crash left.

        The file itself is created by the first append: a run that never buffers leaves
        none behind.
        """
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"cannot create the directory of the write-buffer journal {self.path}: "
                f"{exc.strerror or exc}; check database.journal_path"
            ) from exc
        if self.path.is_dir() or not os.access(directory, os.W_OK):
            raise StartupError(
                f"the write-buffer journal {self.path} cannot be written; "
                "check database.journal_path"
            )
        size = self.size()
        if size:
            with self.path.open("rb") as src:
                src.seek(size - 1)
                torn = src.read(1) != b"\n"
            if torn:  # a crash mid-line: the next record starts on a line of its own
                self._write(b"\n")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, records: Sequence[Record]) -> int:
        """Write ``records`` durably; return the offset the first one starts at."""
        return self._write(b"".join(encode(r) for r in records))

    def _write(self, data: bytes) -> int:
        if self._out is None:
            self._out = self.path.open("ab")
        offset = self._out.tell()
        self._out.write(data)
        self._out.flush()
        os.fsync(self._out.fileno())
        return offset

    def read(self, offset: int, limit: int) -> Chunk:
        """Up to ``limit`` records from ``offset``; unreadable lines are skipped (logged and
        dead-lettered)."""
        records: list[Record] = []
        if not self.path.exists():
            return Chunk(records, offset, True)
        with self.path.open("rb") as src:
            src.seek(offset)
            while len(records) < limit:
                start = src.tell()
                line = src.readline()
                if not line:
                    return Chunk(records, start, True)
                if not line.strip():
                    continue
                try:
                    records.append(decode(line))
                except CorruptRecord as exc:
                    log.error(
                        "journal_line_corrupt", path=str(self.path), offset=start, error=str(exc)
                    )
                    self._dead.add(f"unreadable journal line: {exc}", raw=line)
            end = src.tell()
            at_end = not src.read(1)
        return Chunk(records, end, at_end)

    def count_lines(self, offset: int) -> int:
        with self.path.open("rb") as src:
            src.seek(offset)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: src.read(1 << 20), b""))

    def clear(self) -> None:
        """Everything reached the database: start the journal afresh."""
        if self._out is None:
            self._out = self.path.open("ab")
        self._out.truncate(0)
        self._out.seek(0)
        os.fsync(self._out.fileno())
