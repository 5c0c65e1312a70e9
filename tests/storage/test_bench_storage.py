"""The per-backend storage benchmark runs with tiny sizes, so it does not rot."""

from __future__ import annotations

import math

from bench.bench_storage import measure_storage_backends
from tests.servers.base import require_binary
from tests.servers.postgres import PG_BIN_DIRS


def test_the_backend_benchmark_reports_every_figure() -> None:
    require_binary("initdb", *(f"{d}/initdb" for d in PG_BIN_DIRS))
    require_binary("mariadbd", "/usr/sbin/mariadbd")
    results = measure_storage_backends(rows=40, batch=20, replay=30)
    assert set(results) == {"SQLite", "PostgreSQL", "MariaDB"}
    for backend, figures in results.items():
        for key in ("repo_rows_per_s", "raw_rows_per_s", "replay_s"):
            assert math.isfinite(figures[key]) and figures[key] > 0, (backend, key)
        assert figures["replay_trades"] == 30
