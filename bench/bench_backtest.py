"""Backtest speed: a year of 1-minute candles through a window-20 grid, and a sweep.

- One symbol, 525,600 seeded random-walk candles (about 58 % yearly volatility) stored as
  Parquet; the baseline reads the same candles from the same file (``read_candles``), the
  backtest reads them and runs the grid (the daemon's planner, order book and matching
  engine; events only where something can happen).
- A sweep of 20 combinations (``price_interval`` x ``buy_window_size``) over a shorter
  period, in two processes beside the same sweep in one (the serial baseline).

Numbers are seconds measured in this run; nothing here fails on a miss.
"""

from __future__ import annotations

import tempfile
import time
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

__all__ = ["YEAR", "measure_backtest", "measure_sweep"]

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


def measure_backtest(
    candles: int = YEAR, rounds: int = 2, grids: tuple[tuple[str, str | None], ...] = ()
) -> dict[str, dict[str, float]]:
    """Seconds to read ``candles`` (baseline) and to read and backtest them, per grid
    (``(price_interval, max_position)``); the fastest of ``rounds`` each."""
    grids = grids or (("5", None), ("5", "1500"), ("10", None))
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = _store(Path(tmp), candles)
        read_s = min(_timed(lambda: read_candles(path)) for _ in range(rounds))
        for interval, cap in grids:
            setup = SymbolSetup(_settings(interval, cap).grid_params(), RULES, FEE)
            best = float("inf")
            figures: dict[str, float] = {}
            for _ in range(rounds):
                started = time.perf_counter()
                record = run_symbol(setup, read_candles(path), 60_000)
                elapsed = time.perf_counter() - started
                if elapsed < best:
                    best = elapsed
                    figures = {
                        "orders": float(len(record.orders)),
                        "round_trips": float(len(record.round_trips)),
                    }
            key = f"step {interval}" + ("" if cap is None else f", max_position {cap}")
            out[key] = {"read_s": read_s, "backtest_s": best, "candles": float(candles), **figures}
    return out


def _timed(call: object) -> float:
    started = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - started


def measure_sweep(candles: int = 129_600, jobs: int = 2, rounds: int = 1) -> dict[str, float]:
    """Seconds for the 20-run sweep in ``jobs`` processes and in one; the two alternate
    for ``rounds`` and the fastest of each is kept (the VM is shared and noisy)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = _store(directory, candles)
        source = SymbolSource(_settings("5", None), path, RULES, FEE)
        request = Request((source,), "1m", "nearer", None, None)
        combos = combinations(parse_sweep(SWEEP))
        parallel = serial = float("inf")
        for n in range(rounds):
            parallel = min(
                parallel, _timed(lambda n=n: run_sweep(request, combos, directory / f"p{n}", jobs))
            )
            serial = min(
                serial, _timed(lambda n=n: run_sweep(request, combos, directory / f"s{n}", 1))
            )
    return {"runs": float(len(combos)), "candles": float(candles), "jobs": float(jobs),
            "parallel_s": parallel, "serial_s": serial}  # fmt: skip


if __name__ == "__main__":
    print(measure_backtest())
    print(measure_sweep())
