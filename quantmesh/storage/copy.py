"""``quantmesh db copy``: every table of one database into another, in batches.

It moves a database between any pair of SQLite, PostgreSQL and MySQL/MariaDB (where the
seed needed pgloader, a dump or a program of its own):

- the target is migrated to this version's schema first; the source must be at it
  already (``quantmesh db upgrade`` on it), so both sides have the same columns;
- tables go parents first (grids before their levels), rows in the source's insertion
  order (by ``id``, keyset paging), ``batch_size`` rows per transaction;
- each row is an upsert on the table's unique key, so an interrupted copy is simply run
  again; surrogate ``id`` values are not copied (the target numbers its own rows, and a
  PostgreSQL sequence never falls behind copied ids);
- a log whose ``id`` is its only key (``control_audit``) is copied with its ids, the key
  its rows are matched on; a PostgreSQL target's sequence is then moved past them;
- at the end the row count of every table must match, or the copy fails naming them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from sqlalchemy import Connection, Table, UniqueConstraint, false, func, select

from quantmesh.errors import StorageError
from quantmesh.storage import migrate, models
from quantmesh.storage.dsn import guess_type
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.runner import Runner, runner_for
from quantmesh.storage.statements import upsert


class Progress(Protocol):
    def update(self, table: str, done: int, total: int) -> None: ...

    def finish(self, table: str, done: int) -> None: ...


class StderrProgress:
    """A one-line progress bar per table on a terminal stream (``\\r``-updated)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream = stream
        self._width = width

    def update(self, table: str, done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(share * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(f"\r{table:<12} [{bar}] {done}/{total} ({share:.0%})")
        self._stream.flush()

    def finish(self, table: str, done: int) -> None:
        self.update(table, done, done)
        self._stream.write("\n")
        self._stream.flush()


@dataclass(slots=True)
class CopyReport:
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def unique_key(table: Table) -> tuple[str, ...]:
    """The columns an upsert matches rows on: the table's unique constraint, or ``id``
    for a log that has none (its ids are copied)."""
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            return tuple(c.name for c in constraint.columns)
    if "id" in table.c and table.c.id.primary_key:
        return ("id",)
    raise StorageError(f"table {table.name} has no unique key to copy by")


def open_runner(dsn: str) -> Runner:
    return runner_for(create_engine_for(guess_type(dsn), dsn))


async def copy_database(
    source: str,
    target: str,
    *,
    batch_size: int = 1000,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy every table from ``source`` to ``target`` (URLs, Go DSNs or SQLite paths)."""
    if batch_size < 1:
        raise StorageError("the batch size must be at least 1")
    started = time.perf_counter()
    src = open_runner(source)
    try:
        dst = open_runner(target)
        try:
            await _check_source(src)
            await dst.run("migrate", migrate.upgrade, write=True)
            report = CopyReport()
            for table in models.metadata.sorted_tables:
                await _copy_table(src, dst, table, batch_size, progress)
            await _verify(src, dst, report)
        finally:
            await dst.close()
    finally:
        await src.close()
    report.seconds = time.perf_counter() - started
    return report


async def _check_source(src: Runner) -> None:
    current = await src.run("copy", migrate.current_revision, write=False)
    head = migrate.head_revision()
    if current != head:
        raise StorageError(
            f"the source database is at schema revision {current or 'none'}, not {head}: "
            "run `quantmesh db upgrade` on it first"
        )


def _count(table: Table) -> Any:
    return select(func.count()).select_from(table)


async def _copy_table(
    src: Runner, dst: Runner, table: Table, batch_size: int, progress: Progress | None
) -> None:
    total = await src.run("copy", lambda conn: int(conn.scalar(_count(table)) or 0), write=False)
    key = unique_key(table)
    values = [c.name for c in table.columns if c.name != "id" and c.name not in key]
    statement = upsert(dst.dialect, table, key, values)
    columns = [c for c in table.columns if c.name != "id" or "id" in key]
    page = select(table).order_by(table.c.id).limit(batch_size)
    last_id: Any = None
    done = 0
    while True:
        query = page if last_id is None else page.where(table.c.id > last_id)

        def read(conn: Connection, query: Any = query) -> Sequence[Any]:
            return conn.execute(query).all()

        rows = await src.run("copy", read, write=False)
        if not rows:
            break
        batch = [{c.name: row._mapping[c.name] for c in columns} for row in rows]

        def write(conn: Connection, batch: list[dict[str, Any]] = batch) -> None:
            conn.execute(statement, batch)

        await dst.run("copy", write, write=True)
        last_id = rows[-1].id
        done += len(rows)
        if progress is not None:
            progress.update(table.name, done, max(total, done))
    if "id" in key and dst.dialect == "postgresql":
        await dst.run("copy", lambda conn: conn.execute(_past_copied_ids(table)), write=True)
    if progress is not None:
        progress.finish(table.name, done)


def _past_copied_ids(table: Table) -> Any:
    """Set PostgreSQL's sequence of ``table.id`` past the largest id (copied ids do not
    advance it); the other databases number new rows after the largest id by themselves."""
    sequence = func.pg_get_serial_sequence(table.name, "id")
    following = func.coalesce(func.max(table.c.id), 0) + 1
    return select(func.setval(sequence, following, false()))


async def _verify(src: Runner, dst: Runner, report: CopyReport) -> None:
    def counts(conn: Connection) -> dict[str, int]:
        return {t.name: int(conn.scalar(_count(t)) or 0) for t in models.metadata.sorted_tables}

    source = await src.run("copy", counts, write=False)
    target = await dst.run("copy", counts, write=False)
    wrong = [
        f"{name}: {source[name]} in the source, {target[name]} in the target"
        for name in source
        if source[name] != target[name]
    ]
    if wrong:
        raise StorageError("row counts differ after the copy: " + "; ".join(wrong))
    report.counts = source
