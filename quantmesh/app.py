"""The service: builds the components from settings, runs the traders, shuts down in order.

Shutdown on the first SIGTERM/SIGINT: stop placing, let in-flight exchange calls and
writes finish within ``trading.shutdown_grace``, optionally cancel open orders
(``trading.cancel_on_exit``), then close exchange, lock and repository. A second signal
cancels whatever is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from quantmesh.errors import (
    AuthenticationFailed,
    Disconnected,
    LockUnavailable,
    QuantMeshError,
    RateLimited,
    StorageUnavailable,
)
from quantmesh.exchange.base import Exchange
from quantmesh.lock.base import DistributedLock
from quantmesh.lock.failover import FailoverLock
from quantmesh.observability.http import HttpServer
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.base import Repository
from quantmesh.trading.trader import Trader

log = structlog.get_logger(__name__)

# Errors that say "not now" rather than "never": a trader that meets one while starting
# tries again after a backoff.
TRANSIENT = (Disconnected, RateLimited, StorageUnavailable, LockUnavailable)
START_RETRY_FIRST = 1.0
START_RETRY_MAX = 30.0


@dataclass(slots=True)
class RunResult:
    """What the service reports to the CLI when it ends."""

    failed: dict[str, str] = field(default_factory=dict)
    fatal: str | None = None
    symbols: int = 0

    @property
    def ok(self) -> bool:
        return self.fatal is None and len(self.failed) < max(self.symbols, 1)


class Service:
    def __init__(
        self,
        traders: Sequence[Trader],
        *,
        exchange: Exchange,
        repository: Repository,
        locker: DistributedLock,
        metrics: Metrics,
        shutdown_grace: float = 5.0,
        cancel_on_exit: bool = False,
        http: HttpServer | None = None,
    ) -> None:
        self.traders = list(traders)
        self.exchange = exchange
        self.repository = repository
        self.locker = locker
        self.metrics = metrics
        self.shutdown_grace = shutdown_grace
        self.cancel_on_exit = cancel_on_exit
        self.http = http
        self.result = RunResult(symbols=len(self.traders))
        self._all_failed = asyncio.Event()
        self._fatal = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> RunResult:
        """Run until ``stop`` is set, every symbol failed, or a fatal error occurred.

        The HTTP endpoints come up first and go down last, so ``/healthz`` answers and
        ``/readyz`` says why it is not ready while the service starts and stops.
        """
        if self.http is not None:
            await self.http.start()
        try:
            await self._run_components(stop)
        finally:
            if self.http is not None:
                await self.http.close()
        return self.result

    async def _run_components(self, stop: asyncio.Event) -> None:
        await self.repository.start()
        try:
            if isinstance(self.locker, FailoverLock):
                await self.locker.start()  # the first health check, then periodic ones
            await self.exchange.start()
            try:
                await self._run_traders(stop)
            finally:
                await self.exchange.close()
        finally:
            await self.locker.close()
            await self.repository.close()

    async def _run_traders(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._guard(t), name=f"trader:{t.symbol}") for t in self.traders
            ]
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._all_failed.wait()),
                asyncio.ensure_future(self._fatal.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            log.info("shutdown_started")
            await self._drain()
            for task in tasks:
                task.cancel()

    async def _drain(self) -> None:
        """Stop placing, wait for in-flight work, optionally cancel our open orders."""
        for trader in self.traders:
            trader.stop_placing()
        try:
            async with asyncio.timeout(self.shutdown_grace):
                for trader in self.traders:
                    await trader.quiesce()
                if self.cancel_on_exit:
                    for trader in self.traders:
                        left = await trader.cancel_open_orders()
                        if left:
                            log.warning("open_orders_left", symbol=trader.symbol, count=left)
        except TimeoutError:
            log.warning("shutdown_grace_exceeded", grace=self.shutdown_grace)

    async def _guard(self, trader: Trader) -> None:
        """Run one trader; its failure is reported and does not take the others down.

        A transient error while the trader starts (the exchange or the database briefly
        unreachable) is retried with backoff instead of failing the symbol for good.
        """
        self.metrics.trader_up.labels(trader.symbol).set(1)
        delay = START_RETRY_FIRST
        try:
            while True:
                try:
                    await trader.run()
                    return
                except Exception as exc:  # noqa: BLE001 - reported by _report_failure
                    error = _leaf(exc)
                    if trader.ready.is_set() or trader.stopped or not isinstance(error, TRANSIENT):
                        self._report_failure(trader, error)
                        return
                    log.warning(
                        "symbol_start_retry",
                        symbol=trader.symbol,
                        error=str(error),
                        retry_in=delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, START_RETRY_MAX)
        finally:
            self.metrics.trader_up.labels(trader.symbol).set(0)

    def _report_failure(self, trader: Trader, error: BaseException) -> None:
        if isinstance(error, AuthenticationFailed):
            self.result.fatal = f"the exchange refused the credentials: {error}"
            log.error("authentication_failed", error=str(error))
            self._fatal.set()
        elif isinstance(error, QuantMeshError):
            self._failed(trader, str(error))
        else:
            log.error("trader_crashed", symbol=trader.symbol, exc_info=error)
            self._failed(trader, f"{type(error).__name__}: {error}")

    def _failed(self, trader: Trader, reason: str) -> None:
        self.result.failed[trader.symbol] = reason
        log.error("symbol_failed", symbol=trader.symbol, reason=reason)
        if len(self.result.failed) == len(self.traders):
            self._all_failed.set()


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# The same signal again within this many seconds is the same stop request: some
# supervisors deliver it twice (GNU timeout signals the process and its group).
REPEAT_WINDOW = 0.5


async def serve(service: Service) -> RunResult:
    """Run ``service`` with signal handling: first signal graceful, second forced."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    signals = 0
    first: tuple[int, float] | None = None

    def on_signal(signum: int) -> None:
        nonlocal signals, first
        if first is not None and first[0] == signum and loop.time() - first[1] < REPEAT_WINDOW:
            log.debug("signal_repeated", signal=signal.Signals(signum).name)
            return
        signals += 1
        if signals == 1:
            first = (signum, loop.time())
            log.info("signal_received", signal=signal.Signals(signum).name)
            stop.set()
        elif main is not None:
            log.warning("forced_exit", signal=signal.Signals(signum).name)
            main.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        return await service.run(stop)
    except asyncio.CancelledError:
        if signals < 2 or main is None:
            raise
        main.uncancel()
        return RunResult(fatal="stopped by a second signal before shutdown finished")
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
