"""Backtest speed: a year of 1-minute candles through a window-20 grid, a sweep, Freqtrade.

- One symbol, 525,600 seeded random-walk candles (about 58 % yearly volatility) stored as
  Parquet; the baseline reads the same candles from the same file (``read_candles``), the
  backtest reads them and runs the grid (the daemon's planner, order book and matching
  engine; events only where something can happen). Reading and backtesting alternate
  round by round; the median of the rounds is reported with its spread.
- A sweep of 20 combinations (``price_interval`` x ``buy_window_size``) over a shorter
  period, in two processes beside the same sweep in one (the serial baseline), side by
  side in each of 5 rounds, which goes first alternating; the speedup is the median of the
  rounds' own ratios, printed with their spread, lowest and highest.
- Freqtrade's backtest of the same candles, when an interpreter with freqtrade installed
  is named by ``QUANTMESH_FREQTRADE_PYTHON`` (freqtrade is no dependency of ours: install
  it into a throwaway virtualenv). Its strategy is not a grid (Freqtrade has none): it
  buys a dip below the 20-candle mean and sells 0.25 % higher, one trade at a time. Its
  market list, which it would fetch from the exchange, is handed to it, so it runs
  offline. Its ``backtesting`` command runs in one process twice: over the first day
  (start-up: imports, configuration) and then over all the candles (reading its data file
  included), which is the figure compared. Without it the row says so and is skipped.

Numbers are seconds measured in this run; nothing here fails on a miss. The machine's
load average is printed beside them (other work on a shared machine slows every figure).

``python -m bench.bench_backtest [--quick]`` prints this table alone.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from quantmesh.config import SymbolSettings
from quantmesh.domain import MarketRules
from quantmesh.research.engine import SymbolSetup, run_symbol
from quantmesh.research.history import read_candles, write_candles
from quantmesh.research.runner import Request, run_sweep
from quantmesh.research.setup import SymbolSource
from quantmesh.research.sweep import combinations, parse_sweep
from quantmesh.research.synthetic import random_walk_candles

__all__ = [
    "FREQTRADE_ENV",
    "YEAR",
    "measure_backtest",
    "measure_freqtrade",
    "measure_sweep",
    "median_spread",
]

YEAR = 525_600
RULES = MarketRules(
    symbol="ETH/USDT",
    base="ETH",
    quote="USDT",
    tick_size=Decimal("0.01"),
    lot_size=Decimal("0.0001"),
    min_amount=Decimal("0.0001"),
    min_notional=Decimal(5),
)
FEE = Decimal("0.001")
SWEEP = ["price_interval=0.25%:1%:4", "buy_window_size=5,10,15,20,25"]  # 20 runs
FREQTRADE_ENV = "QUANTMESH_FREQTRADE_PYTHON"


def median_spread(samples: Sequence[float]) -> tuple[float, float]:
    """The median of ``samples`` and their spread, (max - min) / median; NaN without any."""
    if not samples:
        return math.nan, math.nan
    ordered = sorted(samples)
    half = len(ordered) // 2
    middle = ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2
    return middle, (ordered[-1] - ordered[0]) / middle if middle else math.nan


def _settings(interval: str, max_position: str | None) -> SymbolSettings:
    return SymbolSettings(
        symbol="ETH/USDT",
        price_interval=Decimal(interval),
        order_quantity=Decimal(30),
        buy_window_size=20,
        sell_window_size=20,
        max_position=None if max_position is None else Decimal(max_position),
    )


def _store(directory: Path, candles: int) -> Path:
    path = directory / "binance" / "ETH_USDT-1m.parquet"
    data = random_walk_candles(candles, price=2000.0, volatility=0.0008, seed=2025)
    write_candles(path, data, {"symbol": "ETH/USDT", "timeframe": "1m"})
    return path


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure_backtest(
    candles: int = YEAR, rounds: int = 3, grids: tuple[tuple[str, str | None], ...] = ()
) -> dict[str, dict[str, float]]:
    """Seconds to read ``candles`` (baseline) and to read and backtest them, per grid
    (``(price_interval, max_position)``): the median of ``rounds`` alternating rounds, and
    the spread of each."""
    grids = grids or (("5", None), ("5", "1500"), ("10", None))
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = _store(Path(tmp), candles)
        for interval, cap in grids:
            setup = SymbolSetup(_settings(interval, cap).grid_params(), RULES, FEE)
            reads: list[float] = []
            runs: list[float] = []
            cpu: list[float] = []
            figures: dict[str, float] = {}
            for _ in range(rounds):
                reads.append(_timed(lambda: read_candles(path)))
                started, used = time.perf_counter(), time.process_time()
                record = run_symbol(setup, read_candles(path), 60_000)
                runs.append(time.perf_counter() - started)
                cpu.append(time.process_time() - used)
                figures = {
                    "orders": float(len(record.orders)),
                    "round_trips": float(len(record.round_trips)),
                }
            read_s, read_spread = median_spread(reads)
            backtest_s, spread = median_spread(runs)
            key = f"step {interval}" + ("" if cap is None else f", max_position {cap}")
            out[key] = {
                "read_s": read_s,
                "read_spread": read_spread,
                "backtest_s": backtest_s,
                "backtest_spread": spread,
                "backtest_cpu_s": median_spread(cpu)[0],
                "rounds": float(rounds),
                "candles": float(candles),
                **figures,
            }
    return out


def measure_sweep(candles: int = 129_600, jobs: int = 2, rounds: int = 3) -> dict[str, float]:
    """Seconds for the 20-run sweep in ``jobs`` processes and in one, alternating for
    ``rounds``: the median of each, and the median of the rounds' speedups (serial /
    parallel, each round's pair measured side by side) with the spreads."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = _store(directory, candles)
        source = SymbolSource(_settings("5", None), path, RULES, FEE)
        request = Request((source,), "1m", "nearer", None, None)
        combos = combinations(parse_sweep(SWEEP))
        parallel: list[float] = []
        serial: list[float] = []
        for n in range(rounds):
            # Each round times both, side by side; which goes first alternates, so a drift in
            # the machine's load does not always favour the same one.
            order = ("p", "s") if n % 2 == 0 else ("s", "p")
            for kind in order:
                started = time.perf_counter()
                run_sweep(request, combos, directory / f"{kind}{n}", jobs if kind == "p" else 1)
                (parallel if kind == "p" else serial).append(time.perf_counter() - started)
    parallel_s, parallel_spread = median_spread(parallel)
    serial_s, serial_spread = median_spread(serial)
    speedups = [s / p for s, p in zip(serial, parallel, strict=True)]
    speedup, speedup_spread = median_spread(speedups)
    return {
        "runs": float(len(combos)),
        "candles": float(candles),
        "jobs": float(jobs),
        "rounds": float(rounds),
        "parallel_s": parallel_s,
        "parallel_spread": parallel_spread,
        "serial_s": serial_s,
        "serial_spread": serial_spread,
        "speedup": speedup,
        "speedup_spread": speedup_spread,
        "speedup_min": min(speedups),
        "speedup_max": max(speedups),
    }


_FREQTRADE_STRATEGY = """
from freqtrade.strategy import IStrategy


class GridLike(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi = {"0": 0.0025}
    stoploss = -0.99
    startup_candle_count = 20

    def populate_indicators(self, dataframe, metadata):
        dataframe["mean"] = dataframe["close"].rolling(20).mean()
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        dataframe.loc[dataframe["close"] < dataframe["mean"] * 0.9975, "enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe
"""

_FREQTRADE_CONFIG = """{"max_open_trades": 20, "stake_currency": "USDT", "stake_amount": 30,
 "dry_run": true, "dry_run_wallet": 100000, "timeframe": "1m", "trading_mode": "spot",
 "exchange": {"name": "binance", "key": "", "secret": "", "pair_whitelist": ["ETH/USDT"]},
 "pairlists": [{"method": "StaticPairList"}], "entry_pricing": {"price_side": "same"},
 "exit_pricing": {"price_side": "same"}, "dataformat_ohlcv": "feather"}"""

# Runs under freqtrade's interpreter: converts our Parquet file to its feather layout, then
# times its backtest command (start-up included) with the market list given, not fetched.
_FREQTRADE_RUNNER = """
import sys, time
import pyarrow.parquet as pq
from freqtrade.exchange import exchange as ex

source, userdir = sys.argv[1], sys.argv[2]
frame = pq.read_table(source).to_pandas().rename(columns={"timestamp": "date"})
frame["date"] = frame["date"].astype("datetime64[ms, UTC]")
frame.reset_index(drop=True).to_feather(f"{userdir}/data/binance/ETH_USDT-1m.feather")
MARKET = {
    "id": "ETHUSDT", "symbol": "ETH/USDT", "base": "ETH", "quote": "USDT", "baseId": "ETH",
    "quoteId": "USDT", "active": True, "type": "spot", "spot": True, "margin": False,
    "swap": False, "future": False, "option": False, "contract": False, "linear": None,
    "inverse": None, "settle": None, "contractSize": None, "taker": 0.001, "maker": 0.001,
    "precision": {"price": 0.01, "amount": 0.0001},
    "limits": {"amount": {"min": 0.0001, "max": 9000.0}, "cost": {"min": 5.0, "max": None},
               "price": {"min": 0.01, "max": None}, "leverage": {"min": None, "max": None}},
    "info": {},
}


def reload_markets(self, force=False, *, load_leverage_tiers=True):
    self._markets = {"ETH/USDT": MARKET}
    self._api.set_markets([MARKET])
    self._api_async.set_markets([MARKET])
    self._last_markets_refresh = ex.dt_ts()


ex.Exchange.reload_markets = reload_markets
ex.Exchange.validate_timeframes = lambda self, timeframe: None
from freqtrade.main import main

for timerange in sys.argv[3:]:
    started = time.perf_counter()
    try:
        main(["backtesting", "-c", f"{userdir}/config.json", "--userdir", userdir,
              "-s", "GridLike", "--timerange", timerange, "--export", "none"])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    print(f"FREQTRADE {timerange} {time.perf_counter() - started:.3f}", flush=True)
"""


def freqtrade_python() -> str | None:
    """The interpreter named by ``QUANTMESH_FREQTRADE_PYTHON``, if it exists."""
    python = os.environ.get(FREQTRADE_ENV)
    return python if python and Path(python).exists() else None


def measure_freqtrade(candles: int = YEAR, python: str | None = None) -> dict[str, float] | None:
    """Seconds for Freqtrade's backtest of ``candles`` stored 1m candles (its command, start-up
    included) and of their first day (about its start-up alone); ``None`` without it."""
    python = python or freqtrade_python()
    if python is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = _store(directory, candles)
        userdir = directory / "user_data"
        (userdir / "strategies").mkdir(parents=True)
        (userdir / "data" / "binance").mkdir(parents=True)
        (userdir / "strategies" / "GridLike.py").write_text(_FREQTRADE_STRATEGY)
        (userdir / "config.json").write_text(_FREQTRADE_CONFIG)
        runner = directory / "run_freqtrade.py"
        runner.write_text(_FREQTRADE_RUNNER)
        days = math.ceil(candles / 1440)
        until = time.strftime("%Y%m%d", time.gmtime(1735689600 + days * 86400))
        whole, first_day = f"20250101-{until}", "20250101-20250102"
        done = subprocess.run(
            [python, str(runner), str(path), str(userdir), first_day, whole],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
    times = {
        line.split()[1]: float(line.split()[2])
        for line in done.stdout.splitlines()
        if line.startswith("FREQTRADE ")
    }
    if done.returncode != 0 or whole not in times:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"freqtrade's backtest failed: {' '.join(tail)}")
    return {"candles": float(candles), "backtest_s": times[whole], "startup_s": times[first_day]}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_backtest")
    parser.add_argument("--quick", action="store_true", help="a fifth of a year, fewer rounds")
    args = parser.parse_args(argv)
    candles = YEAR // 5 if args.quick else YEAR
    rounds = 2 if args.quick else 3
    sweep_rounds = 2 if args.quick else 5
    print(f"before: {_load()}", flush=True)
    runs = measure_backtest(candles, rounds=rounds)
    print(f"backtest, {candles:,} 1m candles, window 20; median of {rounds} rounds (spread)")
    ours = math.nan
    for grid, r in runs.items():
        if grid == "step 5":
            ours = r["backtest_s"]
        print(
            f"  {grid}: {r['backtest_s']:.2f} s ({r['backtest_spread']:.0%}), cpu "
            f"{r['backtest_cpu_s']:.2f} s; reading {r['read_s']:.3f} s ({r['read_spread']:.0%});"
            f" {r['backtest_s'] / r['read_s']:.1f}x reading; {r['orders']:,.0f} orders, "
            f"{r['round_trips']:,.0f} round trips",
            flush=True,
        )
    sweep = measure_sweep(candles=43_200 if args.quick else 129_600, rounds=sweep_rounds)
    print(
        f"sweep, {sweep['runs']:.0f} runs x {sweep['candles']:,.0f} candles: "
        f"{sweep['parallel_s']:.2f} s ({sweep['parallel_spread']:.0%}) on {sweep['jobs']:.0f} "
        f"processes, {sweep['serial_s']:.2f} s ({sweep['serial_spread']:.0%}) on one; speedup "
        f"{sweep['speedup']:.2f}x median ({sweep['speedup_spread']:.0%}), "
        f"{sweep['speedup_min']:.2f}x lowest, {sweep['speedup_max']:.2f}x highest of "
        f"{sweep['rounds']:.0f} rounds",
        flush=True,
    )
    python = freqtrade_python()
    if python is None:
        print(
            f"freqtrade: skipped - set {FREQTRADE_ENV} to a python with freqtrade installed "
            "(a throwaway virtualenv: pip install freqtrade)"
        )
    else:
        ft = measure_freqtrade(candles, python)
        assert ft is not None
        print(
            f"freqtrade, same {candles:,} candles (dip-buying strategy, one trade at a time): "
            f"{ft['backtest_s']:.2f} s, of which start-up about {ft['startup_s']:.2f} s; "
            f"ours (step 5) {ours:.2f} s: freqtrade / ours {ft['backtest_s'] / ours:.2f}x"
        )
    print(f"after: {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
