"""Every benchmark runs with tiny sizes, so none of them rots. No timing assertions."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a top-level package next to quantmesh/
    sys.path.insert(0, str(ROOT))

from bench.__main__ import main, pipeline_rows, stage_rows
from bench.bench_lock import measure_nop_lock
from bench.bench_ownership import measure_ownership_check
from bench.bench_pipeline import Phase, PipelineRun, _thirds_p99, harness_of, measure_pipeline
from bench.bench_planner import measure_planner
from bench.bench_start import measure_start
from bench.stats import percentile
from bench.table import render

PIPELINE_POSITIVE = (
    "symbols",
    "seconds",
    "pushed_ticks",
    "ticks_per_s",
    "take_p50_ms",
    "take_p99_ms",
    "cpu_share",
    "rss_mb",
    "warmup_s",
)
PIPELINE_ORDER_FIGURES = (
    "warmup_orders",
    "orders",
    "orders_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "handle_p99_ms",
    "latency_all_p99_ms",
)
PIPELINE_COUNTS = (
    "dropped_ticks",
    "cancels",
    "fills",
    "rejects",
    "duplicates",
    "refilled",
    "sustained",
)


def _positive(figures: dict[str, float], keys: tuple[str, ...]) -> None:
    for key in keys:
        assert key in figures, key
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])


def test_planner_and_lock_benches_report_positive_figures() -> None:
    planner = measure_planner(200, rounds=1)
    _positive(planner, ("planner_us_per_tick", "baseline_us_per_call"))

    lock = measure_nop_lock(1000, rounds=1)
    _positive(lock, ("lock_us_per_cycle", "baseline_us_per_cycle"))
    assert math.isfinite(lock["overhead_us_per_cycle"])


def test_a_profiled_phase_splits_the_cpu_by_stage() -> None:
    run = PipelineRun(
        2,
        (
            Phase("paced", 0.5, rate=20.0, levels_per_tick=2.0),
            Phase("profiled", 0.5, rate=20.0, levels_per_tick=2.0, profile=True),
        ),
    )
    plain, profiled = measure_pipeline(run)
    shares = {k: v for k, v in profiled.items() if k.startswith("stage_share:")}
    assert not any(k.startswith("stage_share:") for k in plain)
    assert abs(sum(shares.values()) - 1) < 1e-9
    assert shares["stage_share:planner, ledger"] > 0 and shares["stage_share:book"] > 0
    _positive(plain, ("loop_cpu_us_per_tick",))
    rows = render(stage_rows(profiled, plain))
    assert "planner, ledger" in rows and "database thread" in rows


def test_start_and_ownership_benches_report_positive_figures() -> None:
    start = measure_start(rounds=1)
    _positive(
        asdict(start),
        ("baseline_s", "version_s", "check_config_s", "first_order_s", "run_rss_mb"),
    )
    assert start.run_rss_mb > start.baseline_rss_mb  # the daemon, measured while it ran
    check = measure_ownership_check(1000, rounds=1)
    _positive(check, ("check_us", "empty_call_us"))


def test_pipeline_bench_places_orders_and_reports_every_figure() -> None:
    paced = Phase("paced", 0.6, rate=20.0, levels_per_tick=2.0)  # an order nearly every tick
    saturated = Phase("saturated", 0.3, rate=None, levels_per_tick=2.0)
    run = PipelineRun(2, (paced, saturated))

    baselines = measure_pipeline(harness_of(run, 0.2))
    results = measure_pipeline(run)

    assert len(baselines) == len(results) == 2
    for base in baselines:
        _positive(base, PIPELINE_POSITIVE)
        assert base["orders"] == base["warmup_orders"] == 0  # empty consumers place nothing
    for result in results:
        _positive(result, PIPELINE_POSITIVE + PIPELINE_ORDER_FIGURES)
        for key in PIPELINE_COUNTS:
            assert result[key] >= 0, key
    assert results[0]["target_ticks_per_s"] == 40.0
    assert results[1]["target_ticks_per_s"] == 0.0
    assert results[0]["warmup_orders"] >= 2 * 5  # both buy windows placed
    # The table renders from these figures.
    table = render(pipeline_rows(paced, baselines[0], results[0], first=True))
    assert "tick->order p99 ms" in table
    assert results[0]["latency_p99_low_ms"] <= results[0]["latency_p99_high_ms"]


def test_the_p99_of_each_third_shows_how_far_it_moves_within_a_window() -> None:
    calm, burst = [0.001] * 100, [0.001] * 90 + [0.010] * 10
    thirds = _thirds_p99([*calm, *burst, *calm, 0.5])  # the 301st sample is left out
    assert thirds == {"latency_p99_low_ms": 1.0, "latency_p99_high_ms": 10.0}
    assert all(math.isnan(v) for v in _thirds_p99([0.001, 0.002]).values())


def test_percentile_interpolates() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([0.0, 10.0], 0.99) == 9.9
    assert math.isnan(percentile([], 0.5))


def test_main_rejects_unknown_arguments() -> None:
    try:
        main(["--no-such-option"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("main accepted an unknown option")


def test_storage_benchmark_reports_every_operation() -> None:
    from bench.bench_storage import measure_storage

    r = measure_storage(calls=5, rounds=1)
    for op in ("record_execution", "save_order", "known_trade_ids", "save_last_price"):
        assert r[f"{op}_wall_us"] > 0 and r[f"{op}_cpu_us"] > 0, op
    assert r["thread_hop_wall_us"] > 0
