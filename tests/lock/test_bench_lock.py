"""The Redis and etcd lock benchmarks run with tiny sizes and report every figure (no timing
checks)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a top-level package next to quantmesh/
    sys.path.insert(0, str(ROOT))

import bench.bench_lock
from bench.__main__ import redis_lock_rows
from bench.bench_lock import etcd_lock_rows, etcd_rows, measure_etcd_lock, measure_redis_lock
from bench.table import render
from tests.servers.etcd import etcd_binary
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


def test_etcd_lock_bench_reports_every_figure() -> None:
    etcd_binary()  # skip (or fail under CI) without a server
    r = measure_etcd_lock(cycles=20, concurrency=4, rounds=1)
    for impl in ("etcd_lock", "raw"):
        for figure in ("cycles_per_s", "p50_ms", "p99_ms"):
            value = r[f"{impl}_{figure}"]
            assert math.isfinite(value) and value > 0, (impl, figure, value)
    table = render(etcd_lock_rows(r, 4))
    assert "EtcdLock try_lock+unlock, 4 tasks" in table and "vs raw gateway floor" in table


def test_the_etcd_rows_say_so_when_etcd_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.bench_lock, "etcd_server_binary", lambda: None)
    rows, raw = etcd_rows(quick=True)
    assert raw == {}
    assert "skipped: etcd is not installed" in render(rows)
