"""The single-instance pipeline under load: sim exchange -> traders -> NopLock -> SQLite.

Built as ``quantmesh.wiring.build_service`` builds it, by hand: a ``SimulatedExchange``
without feeds (prices come from ``set_price``), wrapped in ``TimingExchange``; ``NopLock``;
``SqlRepository`` on a SQLite file in a temporary directory; one real ``Trader`` per
symbol; the real ``Service`` running them. The simulated exchange keeps no state file: it
stands in for a remote exchange, whose own bookkeeping is not the daemon's cost.

After a warm-up tick (the traders place their first buy windows), the ``phases`` run one
after the other on the same service, each a measured window of ``seconds`` that starts once
every trader waits for a tick and the records of what they did before it are stored. Every symbol's
price follows a seeded random walk (``levels_per_tick`` is the standard deviation of one
step, in grid levels; prices start between two levels), so orders are placed, filled and
replaced. A phase drives the prices one of two ways:

- paced: ``rate`` ticks per second per symbol, spread evenly over time; a trader that falls
  behind loses its oldest ticks (the exchange's tick queue is bounded), as it would live;
- saturated (``rate=None``): every symbol gets its next tick as soon as its trader takes
  the previous one, which gives the pipeline's throughput.

Figures per phase: ticks taken per second, tick-to-order latency (first order of a tick,
and every order), CPU time / wall time (all threads), peak RSS of the process so far. A
phase with ``profile`` runs under cProfile (its latencies are inflated: run it after an
unprofiled phase) and adds each stage's share of the event loop thread's CPU time
(``stage_share:<stage>``: the planner and ledger, the trader and sender, the book, the
lock, the exchange call, the repository, metrics, logging, the event loop, the bench's
own driver and the rest). Every phase reports the CPU time per tick of the event loop
thread and of the other threads (the database's): multiplied by the shares of a profiled
phase, the CPU per tick by stage.
``harness=True`` runs the same exchange, prices and drivers with empty consumers instead of
the service: the baseline (tick delivery, the bench's own CPU and memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import math
import pstats
import tempfile
import time
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import structlog

from bench.probe import Probe, TimingExchange
from bench.stats import RandomWalk, peak_rss_mb, percentile
from quantmesh.app import Service, tune_process
from quantmesh.domain import MarketRules
from quantmesh.exchange.sim.simulated import SimMarket, SimulatedExchange
from quantmesh.grid.state import GridParams
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.trader import TraderSettings
from quantmesh.wiring import assemble

__all__ = ["Phase", "PipelineRun", "harness_of", "measure_pipeline"]

_ANCHOR_CENTS = 10_000  # every grid is anchored at 100.00
_LEVEL_CENTS = 100  # grid interval 1.00
_START_CENTS = _ANCHOR_CENTS + _LEVEL_CENTS // 2  # prices start between two levels
_IDLE_TIMEOUT = 120.0
_TICK_QUEUE = 16  # ticks the exchange queues per subscriber before dropping the oldest


@dataclass(frozen=True, slots=True)
class Phase:
    """One measured window of a pipeline run."""

    title: str
    seconds: float
    rate: float | None = 10.0  # ticks/s per symbol; None: as fast as the traders take them
    levels_per_tick: float = 0.3
    profile: bool = False  # under cProfile: CPU per tick by stage (latencies inflated)

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.levels_per_tick < 0:
            raise ValueError("seconds must be positive and levels_per_tick not negative")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (or None for as fast as possible)")


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One service (or harness) and the phases measured on it."""

    symbols: int
    phases: tuple[Phase, ...]
    window: int = 5  # buy and sell window of every grid (the default config's)
    seed: int = 1
    harness: bool = False  # empty consumers instead of traders: the baseline

    def __post_init__(self) -> None:
        if self.symbols < 1 or self.window < 1 or not self.phases:
            raise ValueError("symbols, window and phases must not be empty or zero")


def _rules(symbol: str) -> MarketRules:
    base, quote = symbol.split("/")
    return MarketRules(
        symbol=symbol,
        base=base,
        quote=quote,
        tick_size=Decimal("0.01"),
        lot_size=Decimal("0.0001"),
        min_amount=Decimal("0.0001"),
        min_notional=Decimal(5),
    )


def _settings(symbol: str, window: int) -> TraderSettings:
    grid = GridParams(
        symbol=symbol,
        interval=Decimal(_LEVEL_CENTS).scaleb(-2),
        order_quantity=Decimal(30),
        buy_window=window,
        sell_window=window,
        min_order_value=Decimal(10),
        anchor_price=Decimal(_ANCHOR_CENTS).scaleb(-2),
    )
    return TraderSettings(grid=grid)


class _Bench:
    """The exchange, the probe, the price walks and the drivers of one scenario."""

    def __init__(self, run: PipelineRun) -> None:
        self.run = run
        self.symbols = [f"C{i:03d}/USDT" for i in range(run.symbols)]
        markets = {
            s: SimMarket(_rules(s), Decimal(_START_CENTS).scaleb(-2), feed=None)
            for s in self.symbols
        }
        self.sim = SimulatedExchange(
            markets,
            {"USDT": Decimal(10) ** 9},
            Decimal("0.001"),
            state_path=None,
            clock=time.perf_counter,  # tick.ts is the set_price instant (see bench.probe)
            tick_queue_size=_TICK_QUEUE,
        )
        self.probe = Probe(self.symbols, _TICK_QUEUE)
        self.metrics = Metrics()  # the service's (the harness has none)
        self.exchange = TimingExchange(self.sim, self.probe)
        self.walk = RandomWalk(run.symbols, _START_CENTS, _LEVEL_CENTS, run.seed)

    def push(self, i: int) -> None:
        self.probe.before_push(i)
        self.sim.set_price(self.symbols[i], Decimal(self.walk.next(i)).scaleb(-2))

    def writes_queued(self) -> float:
        """Order and fill records the traders acted on that the database has not stored."""
        return sum(s.value for m in self.metrics.write_queue.collect() for s in m.samples)

    async def until_idle(self, running: asyncio.Task[Any]) -> None:
        """Wait until every consumer is idle and what they acted on is stored; fail if
        ``running`` ends or it takes too long."""
        deadline = time.monotonic() + _IDLE_TIMEOUT
        while not self.probe.all_idle() or self.writes_queued():
            if running.done():
                raise RuntimeError(f"the pipeline ended early: {running.result()!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the traders did not become idle in time")
            self.probe.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self.probe.changed.wait()

    async def drive_paced(self, rate: float, seconds: float) -> float:
        """Push ``rate`` ticks/s per symbol for ``seconds``; returns the wall time taken."""
        n = len(self.symbols)
        step = 1.0 / (rate * n)
        total = max(round(seconds * rate * n), 1)
        k = 0
        start = time.perf_counter()
        while k < total:
            now = time.perf_counter()
            while k < total and start + k * step <= now:
                self.push(k % n)
                k += 1
            # Always yield, even when behind: the traders run between the batches.
            await asyncio.sleep(max(start + k * step - time.perf_counter(), 0.0005))
        return time.perf_counter() - start

    async def drive_saturated(self, seconds: float) -> float:
        """Give each trader its next tick as soon as it takes one, for ``seconds``."""
        probe = self.probe
        probe.hungry.update(range(len(self.symbols)))
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            hungry = list(probe.hungry)
            probe.hungry.clear()
            probe.changed.clear()
            for i in hungry:
                self.push(i)
            try:
                async with asyncio.timeout(max(end - time.perf_counter(), 0.0)):
                    await probe.changed.wait()
            except TimeoutError:
                break
        return time.perf_counter() - start


def _service(bench: _Bench, workdir: Path) -> Service:
    """The components, as ``wiring.build_service`` puts them together."""
    exchange = bench.exchange
    # The pool as wiring.build_sql_repository sizes it with the default database settings.
    engine = create_engine_for(
        "sqlite", str(workdir / "bench.db"), pool_size=5, max_overflow=5, pool_recycle=1800
    )
    repository = SqlRepository(engine, exchange.name)
    return assemble(
        [_settings(s, bench.run.window) for s in bench.symbols],
        exchange=exchange,
        repository=repository,
        locker=NopLock(),
        metrics=bench.metrics,
        shutdown_grace=30.0,
    )


async def _harness(bench: _Bench, stop: asyncio.Event) -> None:
    """Empty consumers: take every tick (and order update) and do nothing with it."""

    async def drain(it: Any) -> None:
        async for _ in it:
            pass

    await bench.exchange.start()
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(drain(bench.exchange.watch_ticks(s))) for s in bench.symbols]
            await stop.wait()
            for task in tasks:
                task.cancel()
    finally:
        await bench.exchange.close()


async def _measure(run: PipelineRun, workdir: Path, tally: _LogTally) -> list[dict[str, float]]:
    bench = _Bench(run)
    stop = asyncio.Event()
    service = None if run.harness else _service(bench, workdir)
    if service is not None:
        tune_process(service)  # as app.serve does for the daemon
    running: asyncio.Task[Any] = asyncio.create_task(
        _harness(bench, stop) if service is None else service.run(stop)
    )
    results = []
    try:
        await bench.until_idle(running)  # every trader reconciled, waiting for a tick
        started = time.perf_counter()
        bench.walk.levels_per_tick = run.phases[0].levels_per_tick
        for i in range(run.symbols):
            bench.push(i)  # warm-up: the first buy windows are placed
        await bench.until_idle(running)
        warmup = {
            "warmup_s": time.perf_counter() - started,
            "warmup_orders": float(len(bench.sim.engine.all_orders())),
        }
        for phase in run.phases:
            await bench.until_idle(running)  # what the previous phase left queued
            figures = await _measure_phase(bench, phase, tally)
            results.append({**figures, **warmup})
    finally:
        stop.set()
        await running
    if service is not None and (service.result.failed or service.result.fatal):
        failed = service.result.fatal or service.result.failed
        raise RuntimeError(f"pipeline bench: traders failed: {failed}")
    return results


async def _measure_phase(bench: _Bench, phase: Phase, tally: _LogTally) -> dict[str, float]:
    probe = bench.probe
    bench.walk.levels_per_tick = phase.levels_per_tick
    fills_before = len(bench.sim.engine.fills())
    consumed_before = probe.total_consumed()
    pushed_before = probe.total_pushed()
    logs_before = tally.counts.copy()
    probe.reset()
    cpu_before, loop_before = time.process_time(), time.thread_time()
    # CPU time of this thread, so time spent waiting in epoll is no one's
    profiler = cProfile.Profile(time.thread_time) if phase.profile else None
    if profiler is not None:
        profiler.enable()
    if phase.rate is None:
        wall = await bench.drive_saturated(phase.seconds)
    else:
        wall = await bench.drive_paced(phase.rate, phase.seconds)
    if profiler is not None:
        profiler.disable()
    cpu, loop_cpu = time.process_time() - cpu_before, time.thread_time() - loop_before
    probe.measuring = False
    consumed = probe.total_consumed() - consumed_before
    pushed = probe.total_pushed() - pushed_before
    fills = len(bench.sim.engine.fills()) - fills_before
    target = 0.0 if phase.rate is None else phase.rate * bench.run.symbols
    ticks_per_s = consumed / wall
    # Sustained: the consumers took (nearly) every tick of the schedule, in time.
    sustained = phase.rate is not None and ticks_per_s >= 0.97 * target
    figures = {
        "symbols": float(bench.run.symbols),
        "seconds": wall,
        "target_ticks_per_s": target,
        "pushed_ticks": float(pushed),
        "ticks_per_s": ticks_per_s,
        "dropped_ticks": float(probe.dropped),
        "sustained": 1.0 if sustained else 0.0,
        "orders": float(probe.orders),
        "orders_per_s": probe.orders / wall,
        "cancels": float(probe.cancels),
        "fills": float(fills),
        "rejects": float(probe.rejects),
        "duplicates": float(probe.duplicates),
        "refilled": float(probe.refilled),
        "take_p50_ms": percentile(probe.take, 0.50) * 1e3,
        "take_p99_ms": percentile(probe.take, 0.99) * 1e3,
        "latency_p50_ms": percentile(probe.first, 0.50) * 1e3,
        "latency_p99_ms": percentile(probe.first, 0.99) * 1e3,
        "latency_max_ms": max(probe.first, default=float("nan")) * 1e3,
        # p99 of each third of the window, in time order: how far it moves within a run
        **_thirds_p99(probe.first),
        "handle_p50_ms": percentile(probe.handle, 0.50) * 1e3,
        "handle_p99_ms": percentile(probe.handle, 0.99) * 1e3,
        "latency_all_p99_ms": percentile(probe.every, 0.99) * 1e3,
        "cpu_share": cpu / wall,
        "loop_cpu_us_per_tick": loop_cpu / consumed * 1e6 if consumed else float("nan"),
        "other_cpu_us_per_tick": (cpu - loop_cpu) / consumed * 1e6 if consumed else float("nan"),
        "rss_mb": peak_rss_mb(),
    }
    for event, count in sorted((tally.counts - logs_before).items()):
        figures[f"log:{event}"] = float(count)
    if profiler is not None:
        figures.update(stage_shares(profiler))
    return figures


# Where a profiled function's file lies -> its stage; the first match wins.
STAGES: Final = (
    ("/quantmesh/grid/", "planner, ledger"),
    ("/quantmesh/trading/book.py", "book"),
    ("/quantmesh/trading/", "trader, sender"),
    ("/quantmesh/control/", "trader, sender"),
    ("/quantmesh/lock/", "lock"),
    ("/quantmesh/exchange/", "exchange call"),
    ("/bench/probe.py", "exchange call"),
    ("/bench/", "bench driver"),
    ("/quantmesh/storage/", "repository"),
    ("/prometheus_client/", "metrics"),
    ("/structlog/", "logging"),
    ("/logging/", "logging"),
    ("/asyncio/", "event loop"),
    ("selectors.py", "event loop"),
)


def _thirds_p99(samples: list[float]) -> dict[str, float]:
    """The lowest and highest p99 (ms) of the samples' three consecutive thirds."""
    third = len(samples) // 3
    if third == 0:
        return {"latency_p99_low_ms": math.nan, "latency_p99_high_ms": math.nan}
    p99s = [percentile(samples[i * third : (i + 1) * third], 0.99) * 1e3 for i in range(3)]
    return {"latency_p99_low_ms": min(p99s), "latency_p99_high_ms": max(p99s)}


def _stage(path: str) -> str:
    return next((name for part, name in STAGES if part in path), "other")


def stage_shares(profiler: cProfile.Profile) -> dict[str, float]:
    """Each stage's share of the profiled thread's CPU time, by the functions' own times
    (a built-in's, such as Decimal arithmetic, goes to the stage of the code that called
    it)."""
    own: Counter[str] = Counter()
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (path, _, _), entry in stats.items():
        if path == "~":  # a built-in: its time per caller, to each caller's stage
            for (caller, _, _), by_caller in entry[4].items():
                own[_stage(caller)] += by_caller[2]
        else:
            own[_stage(path)] += entry[2]  # the function's own time, callees excluded
    total = sum(own.values())
    return {f"stage_share:{stage}": seconds / total for stage, seconds in own.items() if total}


class _LogTally:
    """A structlog processor that counts events by name and drops them (or lets them by)."""

    def __init__(self, show: bool) -> None:
        self.counts: Counter[str] = Counter()
        self._show = show

    def __call__(
        self, logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        self.counts[str(event_dict.get("event"))] += 1
        if not self._show:
            raise structlog.DropEvent
        return event_dict


def measure_pipeline(
    run: PipelineRun, workdir: Path | None = None, *, show_logs: bool = False
) -> list[dict[str, float]]:
    """Run one service in a fresh event loop; the figures of each phase, in order.

    The SQLite file goes to ``workdir`` (by default a new temporary directory, removed
    afterwards). Log events below warning are dropped (the trader logs every order);
    warnings and errors are counted into ``log:<event>`` entries, and printed too with
    ``show_logs``. NaN latencies mean no order was placed in the window.
    """
    previous = structlog.get_config()
    tally = _LogTally(show_logs)
    structlog.configure(
        processors=[tally, *previous["processors"]],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )
    try:
        if workdir is not None:
            return asyncio.run(_measure(run, workdir, tally))
        with tempfile.TemporaryDirectory(prefix="quantmesh-bench-") as tmp:
            return asyncio.run(_measure(run, Path(tmp), tally))
    finally:
        structlog.configure(**previous)


def harness_of(run: PipelineRun, seconds: float) -> PipelineRun:
    """The baseline of ``run``: same exchange, drivers and prices, empty consumers, each
    phase ``seconds`` long."""
    phases = tuple(replace(p, seconds=seconds) for p in run.phases)
    return replace(run, phases=phases, harness=True)


if __name__ == "__main__":
    print(measure_pipeline(PipelineRun(1, (Phase("1 symbol", 3.0),))))
