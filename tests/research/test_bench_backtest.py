"""The backtest benchmark runs with tiny sizes, so it does not rot. No timing assertions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a top-level package next to quantmesh/
    sys.path.insert(0, str(ROOT))

from bench.bench_backtest import (
    FREQTRADE_ENV,
    main,
    measure_backtest,
    measure_freqtrade,
    measure_sweep,
    median_spread,
)

pytestmark = pytest.mark.timeout(60)


def test_backtest_and_sweep_benches_report_their_figures() -> None:
    runs = measure_backtest(3_000, rounds=2, grids=(("5", None), ("5", "300")))
    assert set(runs) == {"step 5", "step 5, max_position 300"}
    for figures in runs.values():
        assert figures["candles"] == 3_000 and figures["rounds"] == 2
        for key in ("read_s", "backtest_s", "backtest_cpu_s", "orders", "round_trips"):
            assert math.isfinite(figures[key]) and figures[key] > 0, key
        assert figures["backtest_spread"] >= 0 and figures["read_spread"] >= 0
    sweep = measure_sweep(candles=300, jobs=2, rounds=2)
    assert sweep["runs"] == 20 and sweep["rounds"] == 2
    assert sweep["parallel_s"] > 0 and sweep["serial_s"] > 0
    assert sweep["speedup_min"] <= sweep["speedup"] <= sweep["speedup_max"]
    assert sweep["speedup_spread"] >= 0


def test_median_and_spread() -> None:
    assert median_spread([3.0, 1.0, 2.0]) == (2.0, 1.0)
    assert median_spread([1.0, 2.0, 4.0, 3.0]) == (2.5, 3.0 / 2.5)
    middle, spread = median_spread([])
    assert math.isnan(middle) and math.isnan(spread)


def test_freqtrade_row_is_skipped_with_a_line_when_it_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv(FREQTRADE_ENV, str(tmp_path / "no-such-python"))
    assert measure_freqtrade(100) is None
    monkeypatch.delenv(FREQTRADE_ENV)
    assert measure_freqtrade(100) is None
    import bench.bench_backtest as bench

    monkeypatch.setattr(bench, "YEAR", 1_000)
    monkeypatch.setattr(bench, "measure_sweep", lambda **_: _SWEEP)
    assert main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert f"freqtrade: skipped - set {FREQTRADE_ENV}" in out
    assert "step 5: " in out and "load average" in out


_SWEEP = {
    "runs": 20.0,
    "candles": 1.0,
    "jobs": 2.0,
    "rounds": 1.0,
    "parallel_s": 1.0,
    "parallel_spread": 0.0,
    "serial_s": 2.0,
    "serial_spread": 0.0,
    "speedup": 2.0,
    "speedup_spread": 0.0,
    "speedup_min": 2.0,
    "speedup_max": 2.0,
}
