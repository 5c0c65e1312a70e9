"""The service: runs the built components and the traders, and shuts down in order.

Shutdown on the first SIGTERM/SIGINT (``serve``): stop placing, let
in-flight exchange calls and writes finish within ``trading.shutdown_grace``, optionally
cancel open orders (``trading.cancel_on_exit``), then close exchange, lock and repository.
A second signal cancels whatever is still running.

A reload (SIGHUP) reads the settings file again (the ``reloader`` the service was given): a
symbol's slot can be added, removed (it ends as at shutdown) or retuned (its trader
restarted with new grid parameters) while the service runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog

from quantmesh.cancel import cancel_and_wait
from quantmesh.control.board import ControlBoard
from quantmesh.control.reload import STEP, ReloadReport
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
from quantmesh.grid.risk import InstanceLimits
from quantmesh.interpreter import StartedHeap, tune_interpreter
from quantmesh.lock.base import ServiceLock
from quantmesh.notify.events import NOP, NotificationService, instance_started, instance_stopped
from quantmesh.observability.http import HttpServer
from quantmesh.observability.metrics import Metrics
from quantmesh.secrets import mask_credentials
from quantmesh.storage.base import Repository
from quantmesh.trading.instance_risk import InstanceRisk
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
    notifier: NotificationService = NOP  # messages people receive (NOP: no channels)
    risk: InstanceLimits = field(default_factory=InstanceLimits)  # across symbols; default none


@dataclass(slots=True)
class ServiceState:
    """What a running service shows, shared with its HTTP endpoints: the traders trading
    now (updated in place), the run's result so far, how to reload the settings (None:
    not possible) and the last reload."""

    result: RunResult
    traders: list[Trader] = field(default_factory=list)
    reload: Callable[[], Awaitable[ReloadReport]] | None = None
    last_reload: ReloadReport | None = None


# Builds the HTTP endpoints of a service from what they read.
HttpFactory = Callable[[Components, ServiceState], HttpServer]
# Reads the settings again and applies them to the running service (``wiring``).
Reloader = Callable[["Service"], Awaitable[ReloadReport]]


@dataclass(slots=True)
class _Slot:
    """One configured symbol of a running service: its settings and its task. ``retune``
    asks its trader to restart on ``settings``; ``leave`` ends it (symbol removed)."""

    settings: TraderSettings
    task: asyncio.Task[None] | None = None
    trader: Trader | None = None
    retune: asyncio.Event = field(default_factory=asyncio.Event)
    leave: asyncio.Event = field(default_factory=asyncio.Event)


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
        reloader: Reloader | None = None,
    ) -> None:
        self.symbols = list(symbols)
        self.components = components
        self.make_trader = make_trader
        self._reloader = reloader
        self.state = ServiceState(
            RunResult(symbols=len(self.symbols)),
            reload=self.reload if reloader is not None else None,
        )
        self.coordinator = components.coordinator
        self.exchange = components.exchange
        self.repository = components.repository
        self.locker = components.locker
        self.metrics = components.metrics
        self.controls = components.controls
        self.traders = self.state.traders  # the symbols traded now; updated in place
        self._heap = StartedHeap(self.traders)
        self._freeze = False  # freeze_started_heap()
        self.result = self.state.result
        self.http = make_http(components, self.state) if make_http is not None else None
        self.shutdown_grace = shutdown_grace
        self.cancel_on_exit = cancel_on_exit
        self.cancel_timeout = cancel_timeout
        self._all_failed = asyncio.Event()
        self._fatal = asyncio.Event()
        self._stopping = False
        self._slots: dict[str, _Slot] = {}
        self._tasks: asyncio.TaskGroup | None = None  # the slots' task group while running
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[ReloadReport]] = set()

    async def run(self, stop: asyncio.Event) -> RunResult:
        """Run until ``stop`` is set, every symbol failed, or a fatal error occurred.

        The HTTP endpoints come up first and go down last, so ``/healthz`` answers and
        ``/readyz`` says why it is not ready while the service starts and stops.
        """
        notifier = self.components.notifier
        await notifier.start()
        reason: str | None = None
        drain = True
        try:
            if self.http is not None:
                await self.http.start()
            try:
                await self._run_components(stop)
            finally:
                if self.http is not None:
                    await self.http.close()
        except asyncio.CancelledError:
            reason, drain = "forced exit before shutdown finished", False  # no waiting now
            raise
        except BaseException as exc:
            reason = f"ended by {type(exc).__name__}: {mask_credentials(str(exc))}"
            raise
        finally:  # told last, sent within the notifier's drain time
            reason = reason if reason is not None else self._stop_reason()
            notifier.emit(instance_stopped(reason, self.result.failed))
            await notifier.close(drain=drain)
        return self.result

    def freeze_started_heap(self) -> None:
        """Keep the traders' start-up state out of the collector's scans while this service
        runs (``StartedHeap``): for a process that runs this service alone."""
        self._freeze = True

    def _stop_reason(self) -> str:
        if self.result.fatal is not None:
            return self.result.fatal
        if self.symbols and len(self.result.failed) >= len(self.symbols):
            return "every symbol failed"
        return "stopped on request"

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
            self._tasks = tg
            membership = tg.create_task(self._coordinate(), name="coordination")
            controls = (
                [tg.create_task(self.controls.run(), name="controls")] if self.controls else []
            )
            if self.components.risk.any:
                watch = InstanceRisk(
                    self.components.risk, traders=lambda: self.traders, wall_clock=time.time
                )
                controls.append(tg.create_task(watch.run(), name="instance-risk"))
            heap = tg.create_task(self._heap.run(), name="started-heap") if self._freeze else None
            for symbol in self.symbols:
                self._start_slot(symbol)
            self.components.notifier.emit(
                instance_started([s.symbol for s in self.symbols], self.coordinator.me.role)
            )
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
            if heap is not None:
                await cancel_and_wait(heap)  # the traders leave: no more freezing
            await cancel_and_wait(*self._reloads)  # a reload half applied ends here
            await self._drain()
            # The slots give their leases back on the way out; then the membership goes,
            # so a standby takes over at its next check rather than after the lease lapses.
            await cancel_and_wait(*(s.task for s in self._slots.values() if s.task is not None))
            await cancel_and_wait(*controls)
            await cancel_and_wait(membership)  # first: a late heartbeat would re-register
            await self.coordinator.leave()

    def _start_slot(self, settings: TraderSettings) -> None:
        assert self._tasks is not None
        slot = _Slot(settings)
        self._slots[settings.symbol] = slot
        slot.task = self._tasks.create_task(self._slot(slot), name=f"symbol:{settings.symbol}")

    async def _coordinate(self) -> None:
        try:
            await self.coordinator.run()
        except InstanceIdInUse as exc:
            self.result.fatal = str(exc)
            log.error("instance_id_in_use", error=str(exc))
            self._fatal.set()

    async def _slot(self, slot: _Slot) -> None:
        """Trade the slot's symbol whenever this instance owns it, until the symbol fails
        for good, is removed, or the service stops."""
        symbol = slot.settings.symbol
        coordinator = self.coordinator
        while not self._stopping:
            await self.coordinator.wait_wanted(symbol)
            if self._stopping:
                return
            ended: str | None = None
            try:
                async with coordinator.own(symbol) as claim:
                    ended = await self._trade(slot, claim)
                    if ended == "failed" and not slot.retune.is_set():
                        coordinator.drop(symbol)  # failed here for good: others may try
            except (LockTimeout, LockUnavailable, LockLost):
                pass  # held elsewhere, backend down, or lost: the coordinator said which
            except LockError as exc:
                log.warning("ownership_failed", symbol=symbol, error=str(exc))
            if ended == "failed" and slot.retune.is_set():
                # new settings came as it failed, or while its lease was released: try
                # those, as at start (checked with no await before the task ends, so a
                # reload either sets retune first or finds the task done)
                self.result.failed.pop(symbol, None)
                coordinator.retry(symbol)
                continue
            if ended is not None and ended != "handoff":
                return
            await coordinator.retry_pause(symbol)

    async def _trade(
        self, slot: _Slot, claim: Claim
    ) -> Literal["failed", "handoff", "removed", "stopping"]:
        """Run the symbol's trader while this instance owns it and wants it; restart it
        on the slot's new settings when a reload changed them.

        ``failed`` when the symbol is done for good; ``handoff`` after a hand-off and
        ``removed`` after a reload removed the symbol (the trader stopped placing and
        finished its in-flight calls first; removed: its orders cancelled as
        ``trading.cancel_on_exit`` says). Raises ``LockLost`` when the trader found its
        grid taken over.
        """
        while True:
            if self._stopping:  # checked with no await before the trader joins the list
                return "stopping"
            trader = self.make_trader(slot.settings, claim)
            slot.retune.clear()
            ended = await self._run_trader(slot, trader)
            if ended != "retune":
                return ended

    async def _run_trader(
        self, slot: _Slot, trader: Trader
    ) -> Literal["failed", "handoff", "removed", "retune"]:
        self.traders.append(trader)
        slot.trader = trader
        run = asyncio.create_task(self._guard(trader), name=f"trader:{trader.symbol}")
        handoff = asyncio.create_task(self.coordinator.wait_unwanted(trader.symbol))
        leave = asyncio.create_task(slot.leave.wait())
        retune = asyncio.create_task(slot.retune.wait())
        try:
            await asyncio.wait({run, handoff, leave, retune}, return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                run.result()
                return "failed"
            if slot.leave.is_set():
                await self._leave(trader)
                return "removed"
            if retune.done() and not handoff.done():
                await self._quiet(trader, "retune_grace_exceeded")
                self._keep_step(slot, trader)
                log.info("symbol_trader_restarting", symbol=trader.symbol)
                return "retune"
            log.info("symbol_handoff", symbol=trader.symbol)
            await self._quiet(trader, "handoff_grace_exceeded")
            return "handoff"
        finally:
            await cancel_and_wait(run, handoff, leave, retune)
            self.traders.remove(trader)
            self._heap.release()  # what the trader leaves behind must be collectable
            slot.trader = None

    async def _quiet(self, trader: Trader, overdue: str) -> None:
        """Stop placing and let the in-flight calls finish, within ``shutdown_grace``."""
        trader.stop_placing()
        try:
            async with asyncio.timeout(self.shutdown_grace):
                await trader.quiesce()
        except TimeoutError:
            log.warning(overdue, symbol=trader.symbol)

    async def _leave(self, trader: Trader) -> None:
        """A removed symbol ends as at shutdown: in-flight calls finish, then its open
        orders are cancelled when ``trading.cancel_on_exit`` says so."""
        log.info("symbol_removing", symbol=trader.symbol, cancel=self.cancel_on_exit)
        await self._quiet(trader, "shutdown_grace_exceeded")
        if self.cancel_on_exit:
            await self._cancel_open_orders([trader])

    def _keep_step(self, slot: _Slot, trader: Trader) -> None:
        """A new spacing or step is refused while the grid holds inventory or orders (the
        trader's rule at start): the trader then restarts on the settings it had."""
        refusal = step_refusal(trader, slot.settings)
        if refusal is not None:
            log.error("reload_change_refused", symbol=trader.symbol, reason=refusal)
            slot.settings = trader.settings

    # reloading -------------------------------------------------------------------------

    async def reload(self) -> ReloadReport:
        """Read the settings file again and apply it (``reloader``); one at a time. The
        reload runs to its end even when the caller stops waiting for it."""
        task = asyncio.create_task(self._reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        return await asyncio.shield(task)

    def request_reload(self) -> None:
        """Reload in the background (SIGHUP); the outcome is logged and in the status."""
        if self._reloader is None:
            log.warning("reload_unavailable", detail="this service has no settings file")
            return
        task = asyncio.create_task(self._reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> ReloadReport:
        assert self._reloader is not None
        async with self._reloading:
            report = await self._reloader(self)
        self.state.last_reload = report
        return report

    def configure(
        self, *, shutdown_grace: float, cancel_on_exit: bool, cancel_timeout: float
    ) -> None:
        """The ``trading`` settings a reload applies at once."""
        self.shutdown_grace = shutdown_grace
        self.cancel_on_exit = cancel_on_exit
        self.cancel_timeout = cancel_timeout

    def add_symbol(self, settings: TraderSettings) -> str | None:
        """Start trading ``settings.symbol`` as at start; why not, or None. In a fleet the
        coordinator lists it for the other members and claims it the normal way (its
        ownership lease; an instance still trading it hands it over first)."""
        symbol = settings.symbol
        if self._stopping or self._tasks is None:
            return "the service is not running"
        if symbol in self._slots:
            return "already configured"
        self.symbols.append(settings)
        self.result.symbols = len(self.symbols)
        self.coordinator.configure(s.symbol for s in self.symbols)
        self._start_slot(settings)
        return None

    async def remove_symbol(self, symbol: str) -> None:
        """Stop ``symbol`` as at shutdown (stop placing, in-flight calls finish, orders
        left or cancelled as ``cancel_on_exit`` says), give its lease back, stop claiming it."""
        slot = self._slots[symbol]
        slot.leave.set()
        try:
            if slot.task is not None and slot.trader is None:  # waiting, or done
                await cancel_and_wait(slot.task)
            elif slot.task is not None:  # bounded by the trader's grace and cancels
                bound = self.shutdown_grace + self.cancel_timeout + 5.0
                try:
                    await asyncio.wait_for(asyncio.shield(slot.task), bound)
                except TimeoutError:
                    await cancel_and_wait(slot.task)
        finally:  # kept until it ended, so a shutdown meanwhile cancels it too
            del self._slots[symbol]
        self.symbols = [s for s in self.symbols if s.symbol != symbol]
        self.coordinator.configure(s.symbol for s in self.symbols)  # no longer listed
        self.result.symbols = len(self.symbols)
        self.result.failed.pop(symbol, None)
        self.metrics.trader_up.labels(symbol).set(0)
        log.info("symbol_removed", symbol=symbol)

    def retune_symbol(self, settings: TraderSettings) -> str | None:
        """Restart the symbol's trader on ``settings`` (new grid parameters); why not, or
        None. A new spacing or step is checked against the running trader's grid first,
        which keeps running when it is refused."""
        symbol = settings.symbol
        slot = self._slots.get(symbol)
        if slot is None or slot.task is None:
            return "not configured"
        trader = slot.trader
        if trader is not None:
            refusal = step_refusal(trader, settings)
            if refusal is not None:
                return refusal
        self.symbols = [settings if s.symbol == symbol else s for s in self.symbols]
        if slot.task.done():  # failed for good: a new slot on the new settings
            self._slots.pop(symbol)
            self.result.failed.pop(symbol, None)
            self.coordinator.retry(symbol)  # claimed again as at start
            self._start_slot(settings)
            return None
        slot.settings = settings
        self.result.failed.pop(symbol, None)  # failed as its slot ends: the slot tries again
        slot.retune.set()
        return None

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
            left = await self._cancel_open_orders(traders)
            if left and self.result.fatal is None:
                listed = ", ".join(f"{symbol}: {count}" for symbol, count in sorted(left.items()))
                self.result.fatal = (
                    f"cancel_on_exit: {sum(left.values())} orders are still open on the "
                    f"exchange ({listed}); cancel them there, or start again and stop once more"
                )

    async def _cancel_open_orders(self, traders: Sequence[Trader]) -> dict[str, int]:
        """Cancel every symbol's open orders at once, within ``cancel_timeout``; what is
        left open is logged, counted and returned (at shutdown it makes the run fail: the
        user asked for none)."""
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
        return left

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
                    await self._start_pause(delay, error)
                    delay = min(delay * 2, START_RETRY_MAX)
        finally:
            self.metrics.trader_up.labels(trader.symbol).set(0)

    async def _start_pause(self, delay: float, error: BaseException) -> None:
        """Wait ``delay`` before a symbol's next start - or less when the start was refused
        because writes wait in the write buffer (the database answers again, the replay is
        under way): the next start then goes as soon as they are stored, not after a
        backoff that may have grown to ``START_RETRY_MAX`` during the outage."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                if isinstance(error, StorageUnavailable) and await self.repository.replayed():
                    return
                await asyncio.sleep(delay)

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
        if len(self.result.failed) >= len(self.symbols):
            self._all_failed.set()


def step_refusal(trader: Trader, settings: TraderSettings) -> str | None:
    """Why the running ``trader`` cannot take ``settings``' spacing or step: its grid holds
    inventory or open orders that would be priced on other levels. None when it can (or
    its grid is not loaded yet: the new trader's start checks it then)."""
    old, new = trader.settings.grid, settings.grid
    if all(getattr(old, name) == getattr(new, name) for name in STEP) or trader.book is None:
        return None
    if not trader.inventory and not trader.open_order_count:
        return None
    return (
        f"refused: the grid holds {trader.inventory.normalize():f} inventory and "
        f"{trader.open_order_count} open orders priced on the {old.spacing} step "
        f"{old.interval.normalize():f}; the trader keeps running on it (change the step "
        "once the grid holds nothing)"
    )


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# The same signal again within this many seconds is the same stop request: some
# supervisors deliver it twice (GNU timeout signals the process and its group).
REPEAT_WINDOW = 0.5


def tune_process(service: Service) -> None:
    """Set the interpreter up for a daemon that trades ``service`` (``tune_interpreter``),
    and keep the traders' start-up state out of the collector's scans once they are all
    ready (``StartedHeap``): once a process, before it runs."""
    tune_interpreter()
    service.freeze_started_heap()


async def serve(service: Service) -> RunResult:
    """Run ``service`` in this process (``tune_process``) with signal handling: first
    SIGTERM/SIGINT graceful, second forced; SIGHUP reloads the settings file."""
    tune_process(service)
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

    def on_reload() -> None:
        log.info("signal_received", signal="SIGHUP")
        if not stop.is_set():
            service.request_reload()

    installed = []
    handlers: list[tuple[signal.Signals, Callable[..., None], tuple[object, ...]]] = [
        (signal.SIGINT, on_signal, (signal.SIGINT,)),
        (signal.SIGTERM, on_signal, (signal.SIGTERM,)),
        (signal.SIGHUP, on_reload, ()),
    ]
    for signum, handler, args in handlers:
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signum, handler, *args)
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
        if signal.SIGHUP in installed:  # its default would end the process from here on
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
