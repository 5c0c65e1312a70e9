"""The per-backend storage benchmark runs with tiny sizes, so it does not rot."""

from __future__ import annotations

import math

import pytest

import bench.__main__ as bench_main
from bench.bench_storage import measure_storage_backends
from bench.stats import median_spread
from tests.servers.base import require_binary
from tests.servers.postgres import PG_BIN_DIRS

FIGURES = ("repo", "core", "driver")


def test_the_backend_benchmark_reports_every_figure() -> None:
    require_binary("initdb", *(f"{d}/initdb" for d in PG_BIN_DIRS))
    require_binary("mariadbd", "/usr/sbin/mariadbd")
    results = measure_storage_backends(rows=40, batch=20, replay=30, rounds=2)
    assert set(results) == {"SQLite", "PostgreSQL", "MariaDB"}
    for backend, figures in results.items():
        names = (*FIGURES, "copy") if backend == "PostgreSQL" else FIGURES
        spreads = {f"{name}_rows_per_s": f"{name}_spread" for name in names}
        spreads |= {f"repo_vs_{name}": f"repo_vs_{name}_spread" for name in names[1:]}
        spreads |= {"replay_s": "replay_spread", "journal_load_s": "journal_load_spread"}
        for key, spread in spreads.items():
            assert math.isfinite(figures[key]) and figures[key] > 0, (backend, key)
            assert figures[spread] >= 0, (backend, spread)
        assert "copy_rows_per_s" in figures or backend != "PostgreSQL"
        assert figures["replay_trades"] == 30
        assert figures["rounds"] == 2


def test_median_spread() -> None:
    assert median_spread([3.0, 1.0, 2.0]) == (2.0, 1.0)
    assert median_spread([4.0, 4.0]) == (4.0, 0.0)
    assert all(math.isnan(v) for v in median_spread([]))


def test_the_table_prints_each_floor_beside_the_repository(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    figures = {"repo_rows_per_s": 30.0, "core_rows_per_s": 20.0, "driver_rows_per_s": 40.0}
    figures |= {"copy_rows_per_s": 80.0, "repo_vs_core": 1.5, "repo_vs_driver": 0.75}
    figures |= {"repo_vs_copy": 0.375, "replay_s": 0.2, "journal_load_s": 0.1}
    spreads = ("repo", "core", "driver", "copy", "repo_vs_core", "repo_vs_driver", "repo_vs_copy")
    figures |= {f"{name}_spread": 0.1 for name in (*spreads, "replay", "journal_load")}
    figures |= {"replay_trades": 10_000.0, "rounds": 5.0}
    monkeypatch.setattr(bench_main, "measure_storage_backends", lambda **_: {"PG": figures})
    rows, _ = bench_main.storage_backend_rows(quick=True)
    assert [r.ratio for r in rows[:3]] == ["1.50x (10%)", "0.750x (10%)", "0.375x (10%)"]
    assert "driver executemany" in rows[1].measure and "copy_records_to_table" in rows[2].measure
    assert (rows[0].met, rows[3].met) == (True, True)
