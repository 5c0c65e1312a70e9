"""A process that writes fills through the write buffer, for the kill -9 test.

    python -m tests.storage.writer_process DB_TYPE URL JOURNAL COUNT

Starts the buffered repository (the database must be reachable), prints ``started``,
waits for a line on stdin (the test cuts the database meanwhile), writes COUNT fills
(``t00000``...), prints ``written N PENDING`` and then sleeps until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import structlog

from quantmesh.storage.buffer import BufferedRepository
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository
from tests.storage.support import fill


async def main(db_type: str, url: str, journal: str, count: int) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    engine = create_engine_for(db_type, url, connect_timeout=2, statement_timeout=5)  # type: ignore[arg-type]
    repo = BufferedRepository(
        SqlRepository(engine, "binance"), Path(journal), buffer_size=100, retry_interval=3600
    )
    await repo.start()
    print("started", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for n in range(count):
        await repo.save_fill(fill(f"t{n:05d}", ts=1000.0 + n))
    print(f"written {count} {repo.pending}", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
