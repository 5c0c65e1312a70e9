"""The Redis, etcd and database lock benchmarks run with tiny sizes and report every figure
(no timing checks); the seed's table names every lock and its band."""

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
from bench.bench_lock import (
    SEED_BANDS,
    etcd_lock_rows,
    etcd_rows,
    floor_rows,
    measure_etcd_lock,
    measure_redis_lock,
    measure_sql_lock,
    seed_rows,
)
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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_type", ["postgres", "mysql"])
def test_sql_lock_bench_reports_every_figure(db_type: str) -> None:
    r = measure_sql_lock(db_type, cycles=20, concurrency=4, rounds=2)  # type: ignore[arg-type]
    for impl in ("sql_lock", "raw"):
        for figure in ("cycles_per_s", "p50_ms", "p99_ms"):
            value = r[f"{impl}_{figure}"]
            assert math.isfinite(value) and value > 0, (impl, figure, value)
    assert r["sql_lock_vs_raw"] > 0 and math.isfinite(r["sql_lock_vs_raw_spread"])
    table = render(floor_rows("SqlLock", "sql_lock", r, 4))
    assert "SqlLock try_lock+unlock, 4 tasks" in table and "median of round ratios" in table


def _figures(impl: str, p50: float, rate: float, ratio: float) -> dict[str, float]:
    return {f"{impl}_p50_ms": p50, f"{impl}_p99_ms": 2 * p50, f"{impl}_cycles_per_s": rate,
            f"{impl}_vs_raw": ratio, f"{impl}_vs_raw_spread": 0.1, "raw_p50_ms": p50,
            "raw_p99_ms": 2 * p50, "raw_cycles_per_s": rate / ratio}  # fmt: skip


def test_the_seed_table_names_every_lock_its_band_and_what_was_not_measured() -> None:
    nop = {"lock_us_per_cycle": 0.5, "baseline_us_per_cycle": 0.1, "overhead_us_per_cycle": 0.4}
    results = {
        "none": {"c1": nop},
        "postgres": {"c1": _figures("sql_lock", 0.1, 9000, 0.9),
                     "c50": _figures("sql_lock", 5.0, 9000, 0.9)},
        "mysql": {"c1": _figures("sql_lock", 0.5, 2000, 0.9),
                  "c50": _figures("sql_lock", 60.0, 2000, 0.5)},
    }  # fmt: skip
    rows = seed_rows(results)
    table = render(rows)
    for band in SEED_BANDS.values():
        assert band.name in table and band.text() in table
    assert table.count("not measured") == 2  # Redis and etcd
    met = {row.bench: row.met for row in rows if row.bench}
    assert met["PostgreSQL (SqlLock)"] is True  # p50 0.1 ms: within 10-50 ms or better
    pg, maria = (rows.index(r) for r in rows if r.bench in ("PostgreSQL (SqlLock)",
                                                            "MariaDB (SqlLock)"))  # fmt: skip
    assert rows[pg + 1].met is True and rows[pg + 2].met is True  # 18,000 ops/s >= 100+
    assert rows[maria + 1].met is False  # 0.5x its floor at 50 tasks


def test_python_m_bench_puts_the_seed_table_with_its_lock_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bench.__main__ as main

    nop = {"lock_us_per_cycle": 0.5, "baseline_us_per_cycle": 0.1, "overhead_us_per_cycle": 0.4}
    results = {"none": {"c1": nop}}
    monkeypatch.setattr(main, "lock_table", lambda quick: (seed_rows(results), {"locks": results}))
    rows, raw = main.lock_rows(quick=True)
    table = render(rows)
    assert "NopLock try_lock+unlock" in table and "The seed's lock table, measured" in table
    assert (
        "RedisLock try_lock+unlock: skipped" in table
        and "EtcdLock try_lock+unlock: skipped" in table
    )
    assert raw["nop_lock"] == nop
