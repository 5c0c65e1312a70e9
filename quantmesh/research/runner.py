"""Running backtests: every symbol of a config over its stored candles or trades, one or
a sweep.

A sweep runs its combinations in worker processes (each reads the prices once and keeps
them for the next combination) and saves the reports of each under its own directory.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from quantmesh.research.candles import Candles, timeframe_ms
from quantmesh.research.engine import run_symbol
from quantmesh.research.errors import ResearchError
from quantmesh.research.files import write_atomic
from quantmesh.research.history import read_candles, read_trades
from quantmesh.research.path import PathModel
from quantmesh.research.prints import run_trades
from quantmesh.research.report import Backtest, render_json, totals
from quantmesh.research.setup import SymbolSource
from quantmesh.research.sweep import RANKINGS, Combination, apply, label
from quantmesh.research.trades import TRADES, Trades

__all__ = [
    "Request",
    "SweepRow",
    "check_combinations",
    "rank",
    "run_backtest",
    "run_sweep",
    "write_reports",
]


@dataclass(frozen=True, slots=True)
class Request:
    """What to backtest: the symbols, the period (epoch ms, ``None``: all) and the model."""

    sources: tuple[SymbolSource, ...]
    timeframe: str
    model: PathModel
    start_ms: int | None
    end_ms: int | None
    start_text: str | None = None
    until_text: str | None = None


@functools.lru_cache(maxsize=8)
def _candles(path: Path, start_ms: int | None, end_ms: int | None) -> Candles:
    return read_candles(path, start_ms, end_ms)


@functools.lru_cache(maxsize=8)
def _trades(path: Path, start_ms: int | None, end_ms: int | None) -> Trades:
    return read_trades(path, start_ms, end_ms)


def _first_price(source: SymbolSource, request: Request) -> Decimal:
    if source.kind == TRADES:
        prices = _trades(source.path, request.start_ms, request.end_ms).price
    else:
        prices = _candles(source.path, request.start_ms, request.end_ms).open
    if not prices:
        raise ResearchError(
            f"{source.settings.symbol}: no {source.kind} in {source.path} for the chosen "
            "period; check --from/--until against 'quantmesh data list'"
        )
    tick = source.rules.tick_size
    return Decimal(round(prices[0] / float(tick))) * tick


def check_combinations(request: Request, combos: list[Combination]) -> None:
    """Raise on the first combination some symbol refuses, before anything runs."""
    for source in request.sources:
        first = _first_price(source, request)
        for combo in combos:
            apply(source.settings, combo, first, source.rules.tick_size)


def _reporter(
    progress: Callable[[str, int, int], None] | None, symbol: str, total: int
) -> Callable[[int], None] | None:
    if progress is None:
        return None

    def report(done: int) -> None:
        progress(symbol, done, total)

    return report


def run_backtest(
    request: Request,
    combo: Combination = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> Backtest:
    """Run every symbol of ``request`` (with ``combo``'s settings, if any)."""
    step = timeframe_ms(request.timeframe)
    records = []
    for source in request.sources:
        first = _first_price(source, request)
        settings = source.settings
        if combo:
            settings = apply(settings, combo, first, source.rules.tick_size)
        symbol = settings.symbol
        setup = source.setup(settings)
        if source.kind == TRADES:
            trades = _trades(source.path, request.start_ms, request.end_ms)
            report = _reporter(progress, symbol, len(trades))
            records.append(run_trades(setup, trades, source.fill, progress=report))
        else:
            candles = _candles(source.path, request.start_ms, request.end_ms)
            report = _reporter(progress, symbol, len(candles))
            records.append(
                run_symbol(setup, candles, step, request.model, progress=report, fill=source.fill)
            )
    return Backtest(
        timeframe=request.timeframe,
        path_model=request.model,
        start=request.start_text,
        until=request.until_text,
        records=tuple(records),
    )


def write_reports(backtest: Backtest, out: Path) -> list[Path]:
    """The JSON, HTML and PNG of ``backtest`` under ``out``; the paths written."""
    from quantmesh.research.html import render_html
    from quantmesh.research.png import render_png

    written = []
    for name, data in (
        ("report.json", render_json(backtest)),
        ("report.html", render_html(backtest)),
        ("equity.png", render_png(backtest)),
    ):
        write_atomic(out / name, data)
        written.append(out / name)
    return written


@dataclass(frozen=True, slots=True)
class SweepRow:
    """One combination's outcome."""

    index: int
    label: str
    figures: dict[str, Any]  # the totals of report.json
    out: str


def _sweep_one(request: Request, index: int, combo: Combination, out: Path) -> SweepRow:
    backtest = run_backtest(request, combo)
    target = out / f"{index:03d}"
    write_reports(backtest, target)
    return SweepRow(index, label(combo), totals(backtest.summaries()), str(target))


def run_sweep(
    request: Request,
    combos: list[Combination],
    out: Path,
    jobs: int | None = None,
    done: Callable[[int, int], None] | None = None,
) -> list[SweepRow]:
    """Every combination, in ``jobs`` processes (default: every core); in input order.

    Every combination is checked first: a refused one stops the sweep before any runs."""
    check_combinations(request, combos)
    workers = min(jobs or os.cpu_count() or 1, len(combos))
    if workers <= 1:
        rows = []
        for i, combo in enumerate(combos):
            rows.append(_sweep_one(request, i, combo, out))
            if done is not None:
                done(i + 1, len(combos))
        return rows
    context = multiprocessing.get_context("spawn")
    results: dict[int, SweepRow] = {}
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_sweep_one, request, i, c, out) for i, c in enumerate(combos)]
        for future in futures:
            row = future.result()
            results[row.index] = row
            if done is not None:
                done(len(results), len(combos))
    return [results[i] for i in range(len(combos))]


def rank(rows: list[SweepRow], metric: str) -> list[SweepRow]:
    """``rows`` best first by ``metric`` (a run without the figure ranks last)."""
    higher = RANKINGS[metric]

    def key(row: SweepRow) -> tuple[int, float, int]:
        value = row.figures.get(metric)
        if value is None:
            return (1, 0.0, row.index)
        number = float(value)
        return (0, -number if higher else number, row.index)

    return sorted(rows, key=key)
