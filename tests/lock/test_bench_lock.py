"""The Redis lock benchmark runs with tiny sizes and reports every figure (no timing checks)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a top-level package next to quantmesh/
    sys.path.insert(0, str(ROOT))

from bench.__main__ import redis_lock_rows
from bench.bench_lock import measure_redis_lock
from bench.table import render
from tests.servers.redis import redis_binary


def test_redis_lock_bench_reports_every_figure() -> None:
    redis_binary()  # skip (or fail under CI) without a server
    r = measure_redis_lock(cycles=40, concurrency=4, rounds=1)
    for impl in ("redis_lock", "redis_py_lock", "raw"):
        for figure in ("cycles_per_s", "p50_ms", "p99_ms"):
            value = r[f"{impl}_{figure}"]
            assert math.isfinite(value) and value > 0, (impl, figure, value)
    table = render(redis_lock_rows(r, 4))
    assert "vs redis-py Lock" in table and "vs raw EVALSHA floor" in table
