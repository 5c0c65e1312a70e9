"""The backtest benchmark runs with tiny sizes, so it does not rot. No timing assertions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a top-level package next to quantmesh/
    sys.path.insert(0, str(ROOT))

from bench.bench_backtest import measure_backtest, measure_sweep

pytestmark = pytest.mark.timeout(60)


def test_backtest_and_sweep_benches_report_their_figures() -> None:
    runs = measure_backtest(3_000, rounds=1, grids=(("5", None), ("5", "300")))
    assert set(runs) == {"step 5", "step 5, max_position 300"}
    for figures in runs.values():
        assert figures["candles"] == 3_000
        for key in ("read_s", "backtest_s", "orders", "round_trips"):
            assert math.isfinite(figures[key]) and figures[key] > 0, key
    sweep = measure_sweep(candles=300, jobs=2)
    assert sweep["runs"] == 20
    assert sweep["parallel_s"] > 0 and sweep["serial_s"] > 0
