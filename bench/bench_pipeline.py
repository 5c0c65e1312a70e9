"""The single-instance pipeline under load: sim exchange -> traders -> NopLock -> SQLite.

Built as ``quantmesh.wiring.build_service`` builds it, by hand: a ``SimulatedExchange``
without feeds (prices come from ``set_price``), wrapped in ``TimingExchange``; ``NopLock``;
``SqlRepository`` on a SQLite file in a temporary directory; one real ``Trader`` per
symbol; the real ``Service`` running them. The simulated exchange keeps no state file: it
stands in for a remote exchange, whose own bookkeeping is not the daemon's cost.

Every symbol's price follows a seeded random walk (``levels_per_tick`` is the standard
deviation of one step, in grid levels), so orders are placed, filled and replaced. Two
drivers:

- paced: ``rate`` ticks per second per symbol, spread evenly over time; a trader that falls
  behind loses its oldest ticks (the exchange's tick queue is bounded), as it would live;
- saturated (``rate=None``): every symbol gets its next tick as soon as its trader takes
  the previous one, which gives the pipeline's throughput.

After a warm-up tick (the traders place their first buy windows), one measured window of
``seconds``: ticks taken by the traders per second, tick-to-order latency (first order of a
tick, and every order), CPU time / wall time, peak RSS.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import structlog

from bench.probe import Probe, TimingExchange
from quantmesh.app import RunResult, Service
from quantmesh.domain import MarketRules
from quantmesh.exchange.simulated import SimMarket, SimulatedExchange
from quantmesh.lock.nop import NopLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.engine import create_engine_for
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.lockkeys import LockKeys
from quantmesh.trading.trader import Trader, TraderSettings

__all__ = ["PipelineRun", "measure_pipeline", "peak_rss_mb"]

_START_CENTS = 10_000  # every market starts at 100.00
_LEVEL_CENTS = 100  # grid interval 1.00
_LOW_CENTS, _HIGH_CENTS = 5_000, 15_000  # the walk stays within 50..150
_READY_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One pipeline scenario."""

    symbols: int
    seconds: float
    rate: float | None = 10.0  # ticks/s per symbol; None: as fast as the traders take them
    levels_per_tick: float = 0.5
    window: int = 5  # buy and sell window of every grid (the default config's)
    seed: int = 1

    def __post_init__(self) -> None:
        if self.symbols < 1 or self.seconds <= 0 or self.window < 1:
            raise ValueError("symbols, seconds and window must be positive")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (or None for as fast as possible)")


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB.

    Linux's ``VmHWM`` first: ``ru_maxrss`` survives ``exec``, so a child process started
    by a large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Walk:
    """Seeded per-symbol random walks of the price, on the tick grid."""

    def __init__(self, symbols: int, levels_per_tick: float, seed: int) -> None:
        self._rngs = [random.Random(seed * 1_000_003 + i) for i in range(symbols)]
        self._cents = [_START_CENTS] * symbols
        self._sigma = levels_per_tick * _LEVEL_CENTS

    def next(self, i: int) -> Decimal:
        cents = self._cents[i] + round(self._rngs[i].gauss(0.0, self._sigma))
        if not _LOW_CENTS <= cents <= _HIGH_CENTS:  # reflect at the bounds
            cents = self._cents[i] - (cents - self._cents[i])
        self._cents[i] = cents
        return Decimal(cents).scaleb(-2)


def _symbol(i: int) -> str:
    return f"C{i:03d}/USDT"


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
    return TraderSettings(
        symbol=symbol,
        interval=Decimal(_LEVEL_CENTS).scaleb(-2),
        order_quantity=Decimal(30),
        buy_window=window,
        sell_window=window,
        min_order_value=Decimal(10),
        anchor_price=Decimal(_START_CENTS).scaleb(-2),
    )


class _Pipeline:
    def __init__(self, run: PipelineRun, workdir: Path) -> None:
        self.run = run
        self.symbols = [_symbol(i) for i in range(run.symbols)]
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
        )
        self.probe = Probe(self.symbols)
        exchange = TimingExchange(self.sim, self.probe)
        # The pool as wiring.build_repository sizes it with the default database settings.
        engine = create_engine_for(
            "sqlite", str(workdir / "bench.db"), pool_size=5, max_overflow=5, pool_recycle=1800
        )
        repository = SqlRepository(engine, exchange.name)
        locker = NopLock()
        metrics = Metrics()
        keys = LockKeys(exchange.name, "level")
        traders = [
            Trader(
                _settings(s, run.window),
                exchange=exchange,
                repository=repository,
                locker=locker,
                lock_keys=keys,
                metrics=metrics,
            )
            for s in self.symbols
        ]
        self.service = Service(
            traders,
            exchange=exchange,
            repository=repository,
            locker=locker,
            metrics=metrics,
            shutdown_grace=30.0,
        )
        self.walk = _Walk(run.symbols, run.levels_per_tick, run.seed)

    def push(self, i: int) -> None:
        self.probe.pushed[i] += 1
        self.sim.set_price(self.symbols[i], self.walk.next(i))

    async def until(self, service: asyncio.Task[RunResult]) -> None:
        """Wait until every trader is idle; fail if the service ends or it takes too long."""
        deadline = time.monotonic() + _READY_TIMEOUT
        while not self.probe.all_idle():
            if service.done():
                result = service.result()
                raise RuntimeError(f"service ended early: {result.fatal or result.failed}")
            if time.monotonic() > deadline:
                raise RuntimeError("traders did not become idle in time")
            self.probe.changed.clear()
            try:
                async with asyncio.timeout(0.05):
                    await self.probe.changed.wait()
            except TimeoutError:
                pass

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


def _percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=1000, method="inclusive")[round(q * 1000) - 1]


async def _measure(run: PipelineRun, workdir: Path) -> dict[str, float]:
    pipe = _Pipeline(run, workdir)
    probe = pipe.probe
    stop = asyncio.Event()
    service = asyncio.create_task(pipe.service.run(stop))
    try:
        await pipe.until(service)  # every trader reconciled and waits for its first tick
        for i in range(run.symbols):
            pipe.push(i)  # warm-up: the first buy windows are placed
        await pipe.until(service)
        fills_before = len(pipe.sim.engine.fills())
        consumed_before = probe.total_consumed()
        pushed_before = probe.total_pushed()
        probe.reset()
        cpu_before = time.process_time()
        if run.rate is None:
            wall = await pipe.drive_saturated(run.seconds)
        else:
            wall = await pipe.drive_paced(run.rate, run.seconds)
        cpu = time.process_time() - cpu_before
        probe.measuring = False
        consumed = probe.total_consumed() - consumed_before
        pushed = probe.total_pushed() - pushed_before
        fills = len(pipe.sim.engine.fills()) - fills_before
    finally:
        stop.set()
        result = await service
    if result.failed or result.fatal:
        raise RuntimeError(f"pipeline bench: traders failed: {result.fatal or result.failed}")
    target = 0.0 if run.rate is None else run.rate * run.symbols
    ticks_per_s = consumed / wall
    # Sustained: the traders took (nearly) every tick of the schedule in time.
    sustained = run.rate is not None and ticks_per_s >= 0.97 * target and consumed >= 0.97 * pushed
    return {
        "symbols": float(run.symbols),
        "seconds": wall,
        "target_ticks_per_s": target,
        "pushed_ticks_per_s": pushed / wall,
        "ticks_per_s": ticks_per_s,
        "dropped_ticks": float(max(pushed - consumed, 0)),
        "sustained": 1.0 if sustained else 0.0,
        "orders": float(probe.orders),
        "cancels": float(probe.cancels),
        "fills": float(fills),
        "orders_per_s": probe.orders / wall,
        "latency_p50_ms": _percentile(probe.first_latencies, 0.50) * 1e3,
        "latency_p99_ms": _percentile(probe.first_latencies, 0.99) * 1e3,
        "latency_max_ms": max(probe.first_latencies, default=float("nan")) * 1e3,
        "latency_all_p99_ms": _percentile(probe.all_latencies, 0.99) * 1e3,
        "cpu_share": cpu / wall,
        "rss_mb": peak_rss_mb(),
    }


def _quiet_logs() -> dict[str, object]:
    """Drop structlog events below warning (the trader logs every order); returns the
    previous configuration."""
    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return previous


def measure_pipeline(run: PipelineRun, workdir: Path | None = None) -> dict[str, float]:
    """Run one scenario in a fresh event loop; the SQLite file goes to ``workdir`` (a new
    temporary directory by default, removed afterwards)."""
    previous = _quiet_logs()
    try:
        if workdir is not None:
            return asyncio.run(_measure(run, workdir))
        with tempfile.TemporaryDirectory(prefix="quantmesh-bench-") as tmp:
            return asyncio.run(_measure(run, Path(tmp)))
    finally:
        structlog.configure(**previous)


if __name__ == "__main__":
    print(measure_pipeline(PipelineRun(symbols=1, seconds=3)))
