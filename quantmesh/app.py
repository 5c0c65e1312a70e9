"""The service: runs the built components and the traders, and shuts down in order.

Shutdown on the first SIGTERM/SIGINT: stop placing, let in-flight exchange calls and
writes finish within ``trading.shutdown_grace``, optionally cancel open orders
(``trading.cancel_on_exit``), then close exchange, lock and repository. A second signal
cancels whatever is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.control.board import ControlBoard
from quantmesh.coordination.coordinator import Claim, Coordinator
from quantmesh.errors import (
    AuthenticationFailed,
    Disconnected,
    InstanceIdInUse,
    LockError,
    LockLost,
    LockTimeout,
    LockUnavailable,
    QuantMeshError,
    RateLimited,
    StorageUnavailable,
)
from quantmesh.exchange.base import Exchange
from quantmesh.lock.base import ServiceLock
from quantmesh.observability.http import HttpServer
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.base import Repository
from quantmesh.trading.trader import Trader, TraderSettings

log = structlog.get_logger(__name__)

# Errors that say "not now" rather than "never": a trader that meets one while starting
# tries again after a backoff.
TRANSIENT = (Disconnected, RateLimited, StorageUnavailable, LockUnavailable)
START_RETRY_FIRST = 1.0
START_RETRY_MAX = 30.0

# Builds the trader of one symbol for one spell of ownership.
TraderFactory = Callable[[TraderSettings, Claim], Trader]


@dataclass(slots=True)
class RunResult:
    """What the service reports to the CLI when it ends."""

    failed: dict[str, str] = field(default_factory=dict)
    fatal: str | None = None
    symbols: int = 0

    @property
    def ok(self) -> bool:
        return self.fatal is None and len(self.failed) < max(self.symbols, 1)


@dataclass(frozen=True, slots=True)
class Components:
    """What a service runs besides its traders; its HTTP endpoints read the same."""

    exchange: Exchange
    repository: Repository
    locker: ServiceLock
    coordinator: Coordinator
    metrics: Metrics
    controls: ControlBoard | None = None  # what people ask of the symbols (None: nothing)


@dataclass(slots=True)
class ServiceState:
    """What a running service shows, shared with its HTTP endpoints: the traders trading
    now (updated in place) and the run's result so far."""

    result: RunResult
    traders: list[Trader] = field(default_factory=list)


# Builds the HTTP endpoints of a service from what they read.
HttpFactory = Callable[[Components, ServiceState], HttpServer]


class Service:
    """Runs one slot per configured symbol: the symbol is traded while this instance owns
    it (``coordination``), by a trader built for that spell of ownership."""

    def __init__(
        self,
        symbols: Sequence[TraderSettings],
        components: Components,
        *,
        make_trader: TraderFactory,
        make_http: HttpFactory | None = None,
        shutdown_grace: float = 5.0,
        cancel_on_exit: bool = False,
        cancel_timeout: float = 30.0,
    ) -> None:
        self.symbols = list(symbols)
        self.components = components
        self.make_trader = make_trader
        self.state = ServiceState(RunResult(symbols=len(self.symbols)))
        self.coordinator = components.coordinator
        self.exchange = components.exchange
        self.repository = components.repository
        self.locker = components.locker
        self.metrics = components.metrics
        self.controls = components.controls
        self.traders = self.state.traders  # the symbols traded now; updated in place
        self.result = self.state.result
        self.http = make_http(components, self.state) if make_http is not None else None
        self.shutdown_grace = shutdown_grace
        self.cancel_on_exit = cancel_on_exit
        self.cancel_timeout = cancel_timeout
        self._all_failed = asyncio.Event()
        self._fatal = asyncio.Event()
        self._stopping = False

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
            membership = tg.create_task(self._coordinate(), name="coordination")
            controls = (
                [tg.create_task(self.controls.run(), name="controls")] if self.controls else []
            )
            slots = [
                tg.create_task(self._slot(symbol), name=f"symbol:{symbol.symbol}")
                for symbol in self.symbols
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
            self._stopping = True  # no slot starts a trader from here on
            await self._drain()
            # The slots give their leases back on the way out; then the membership goes,
            # so a standby takes over at its next check rather than after the lease lapses.
            await cancel_and_wait(*slots)
            await cancel_and_wait(*controls)
            await cancel_and_wait(membership)  # first: a late heartbeat would re-register
            await self.coordinator.leave()

    async def _coordinate(self) -> None:
        try:
            await self.coordinator.run()
        except InstanceIdInUse as exc:
            self.result.fatal = str(exc)
            log.error("instance_id_in_use", error=str(exc))
            self._fatal.set()

    async def _slot(self, settings: TraderSettings) -> None:
        """Trade ``settings.symbol`` whenever this instance owns it, until the symbol fails
        for good or the service stops."""
        symbol = settings.symbol
        coordinator = self.coordinator
        while not self._stopping:
            await coordinator.wait_wanted(symbol)
            if self._stopping:
                return
            try:
                async with coordinator.own(symbol) as claim:
                    if await self._trade(settings, claim):
                        coordinator.drop(symbol)  # failed here for good: others may try
                        return
            except (LockTimeout, LockUnavailable, LockLost):
                pass  # held elsewhere, backend down, or lost: the coordinator said which
            except LockError as exc:
                log.warning("ownership_failed", symbol=symbol, error=str(exc))
            await coordinator.retry_pause(symbol)

    async def _trade(self, settings: TraderSettings, claim: Claim) -> bool:
        """Run the symbol's trader while this instance owns it and wants it.

        True when the symbol is done for good (failed); False after a hand-off (the
        trader stopped placing and finished its in-flight calls first). Raises
        ``LockLost`` when the trader found its grid taken over.
        """
        if self._stopping:  # checked with no await before the trader joins the list
            return False
        trader = self.make_trader(settings, claim)
        self.traders.append(trader)
        run = asyncio.create_task(self._guard(trader), name=f"trader:{trader.symbol}")
        handoff = asyncio.create_task(self.coordinator.wait_unwanted(trader.symbol))
        try:
            await asyncio.wait({run, handoff}, return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                run.result()
                return True
            log.info("symbol_handoff", symbol=trader.symbol)
            trader.stop_placing()
            try:
                async with asyncio.timeout(self.shutdown_grace):
                    await trader.quiesce()
            except TimeoutError:
                log.warning("handoff_grace_exceeded", symbol=trader.symbol)
            return False
        finally:
            await cancel_and_wait(run, handoff)
            self.traders.remove(trader)

    async def _drain(self) -> None:
        """Stop placing, wait for in-flight work, optionally cancel our open orders."""
        traders = list(self.traders)
        for trader in traders:
            trader.stop_placing()
        try:
            async with asyncio.timeout(self.shutdown_grace):
                for trader in traders:
                    await trader.quiesce()
        except TimeoutError:
            log.warning("shutdown_grace_exceeded", grace=self.shutdown_grace)
        if self.cancel_on_exit:
            await self._cancel_open_orders(traders)

    async def _cancel_open_orders(self, traders: Sequence[Trader]) -> None:
        """Cancel every symbol's open orders at once, within ``cancel_timeout``; what is
        left open is logged, counted, and makes the run fail (the user asked for none)."""
        left: dict[str, int] = {}
        try:
            async with asyncio.timeout(self.cancel_timeout), asyncio.TaskGroup() as tg:
                for trader in traders:
                    tg.create_task(trader.cancel_open_orders())
        except TimeoutError:
            log.warning("cancel_on_exit_timeout", timeout=self.cancel_timeout)
        except Exception as exc:  # noqa: BLE001 - reported below with the orders left
            log.error("cancel_on_exit_failed", error=str(_leaf(exc)))
        for trader in traders:
            count = trader.open_order_count
            self.metrics.open_orders_left.labels(trader.symbol).set(count)
            if count:
                left[trader.symbol] = count
                log.error("open_orders_left", symbol=trader.symbol, count=count)
        if left and self.result.fatal is None:
            listed = ", ".join(f"{symbol}: {count}" for symbol, count in sorted(left.items()))
            self.result.fatal = (
                f"cancel_on_exit: {sum(left.values())} orders are still open on the exchange "
                f"({listed}); cancel them there, or start again and stop once more"
            )

    async def _guard(self, trader: Trader) -> None:
        """Run one trader; its failure is reported and does not take the others down.

        A transient error while the trader starts (the exchange or the database briefly
        unreachable) is retried with backoff instead of failing the symbol for good. A
        grid taken over by a newer owner (``LockLost``) under ownership leases is not a
        failure: it is raised, and the symbol waits to be owned again.
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
                    if isinstance(error, LockLost) and self.coordinator.leased:
                        raise error from None
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
        if len(self.result.failed) == len(self.symbols):
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
