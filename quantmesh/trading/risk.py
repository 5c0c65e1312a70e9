"""One symbol's risk exits at run time: the watch fed with every fresh price, the hold it
sets when a trigger fires, and the record of that hold as desired state.

When a trigger fires the guard holds the symbol at once, in this process (``stop_buys``;
``halt``: paused with every order cancelled; ``liquidate``: buys cancelled, what is held
sold at the market's price), logs ``risk_triggered`` and sets
``quantmesh_risk_triggered{symbol,trigger,action}``, tells the notification channels; then it records the hold through
``record`` (the control board: the database, with the trigger and its values as the reason
and ``risk:<trigger>`` as who asked), retrying until it is stored, so the hold survives a
restart and follows the symbol to its next owner. Never fail open: the local hold stays
until the desired state read back is at least as recent as the trigger - then a person's
``resume`` (or any later action) is what the symbol follows, and the watch starts again
from the equity of that moment, a price trigger only once its price has come back.

The watch runs only while no risk hold is in force (after a restart or a take-over, the
hold read from the database keeps it quiet), so a trigger is recorded once.

The watch's equity peak is stored through ``peaks`` (when it rose, at most every
``PEAK_SAVE_INTERVAL`` seconds, and at once when a resume reset it) and read back by
``restore`` when the trader starts, so a drawdown is measured from the same peak after a
restart or a take-over. A peak not stored is tried again with the next change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Protocol

import structlog

from quantmesh.control.desired import Desired
from quantmesh.errors import StorageError
from quantmesh.grid.pnl import Position
from quantmesh.grid.risk import Fired, RiskAction, RiskLimits, RiskWatch
from quantmesh.notify.events import NOP, Notifier, risk_triggered
from quantmesh.observability.metrics import Metrics

log = structlog.get_logger(__name__)

RISK_ACTOR = "risk:"  # the prefix of who asked, for a hold a trigger set
RECORD_RETRY = 2.0  # seconds between attempts to store a hold the database refused

PEAK_SAVE_INTERVAL = 5.0  # seconds between stores of a rising equity peak
PEAK_FLUSH_TIMEOUT = 2.0  # seconds a trader's end may spend storing the last peak

Record = Callable[[Fired], Awaitable[object]]


class PeakStore(Protocol):
    """Where a symbol's equity peak is kept (``storage.peaks.SqlPeakStore``)."""

    async def load_peak(self, symbol: str) -> tuple[Decimal, Decimal] | None: ...
    async def save_peak(self, symbol: str, peak: Decimal, capital: Decimal, at: float) -> None: ...


def hold_of(fired: Fired, at: float) -> Desired:
    """The desired state a trigger sets."""
    actor = RISK_ACTOR + fired.trigger
    if fired.action == "stop_buys":
        return Desired("stop_buys", False, fired.reason, actor, at)
    if fired.action == "liquidate":
        return Desired("liquidate", False, fired.reason, actor, at)
    return Desired("paused", True, fired.reason, actor, at)


def action_of(hold: Desired) -> RiskAction:
    """The risk action a stored hold carries out."""
    if hold.mode == "stop_buys" or hold.mode == "liquidate":
        return hold.mode
    return "halt"


def is_risk_hold(desired: Desired | None) -> bool:
    return desired is not None and desired.mode != "active" and desired.actor.startswith(RISK_ACTOR)


class RiskGuard:
    """The risk exits of ``symbol``; see the module's docstring."""

    def __init__(
        self,
        symbol: str,
        limits: RiskLimits,
        *,
        metrics: Metrics,
        record: Record | None,
        wall_clock: Callable[[], float],
        retry: float = RECORD_RETRY,
        notifier: Notifier = NOP,
        peaks: PeakStore | None = None,
    ) -> None:
        self.symbol = symbol
        self._watch = RiskWatch(limits)
        self._metrics = metrics
        self._record = record
        self._wall = wall_clock
        self._retry = retry
        self._notifier = notifier
        self.realized_before = Decimal(0)  # stored round trips' PnL before this trader began
        self.hold: Desired | None = None  # the local hold, until the board reads it back
        self._recording: asyncio.Task[None] | None = None
        self._shown: tuple[str, str] | None = None  # the trigger the metric shows as held
        self._peaks = peaks
        self._stored_peak: tuple[Decimal, Decimal] | None = None  # as the store has it
        self._peak_due = 0.0  # wall time from which a risen peak may be stored again
        self._saving: asyncio.Task[None] | None = None

    @property
    def watching(self) -> bool:
        """Whether the symbol has limits of its own to watch (else it only shows and
        carries out the holds of the instance's limits)."""
        return self._watch.limits.any

    def check(
        self,
        price: Decimal,
        held: Callable[[], Position],
        realized: Decimal,
        order_value: Decimal,
        control: Desired | None,
    ) -> None:
        """Feed one fresh price (never call with a stale one: no trigger fires then);
        ``held`` gives the position at that price (asked only when it is needed)."""
        if self.hold is not None or control is None:
            return
        if is_risk_hold(control):  # held (read back, or set by a former owner): shown
            trigger = control.actor.removeprefix(RISK_ACTOR)
            action = action_of(control)
            self._metrics.risk_triggered.labels(self.symbol, trigger, action).set(1)
            self._shown = (trigger, action)
            return
        resumed = self._shown is not None
        if resumed:  # resumed after a trigger: watch again from here
            assert self._shown is not None
            self._metrics.risk_triggered.labels(self.symbol, *self._shown).set(0)
            self._shown = None
            log.info("risk_watch_resumed", by=control.actor, mode=control.mode)
        if not self.watching:
            return
        position = held()
        equity = self.realized_before + realized + position.unrealized
        if resumed:
            self._watch.resume(price, equity, position.cost, order_value)
            self._peak_due = 0.0  # a reset peak is stored at once
        fired = self._watch.check(price, equity, position.cost, order_value)
        if fired is not None:
            self.impose(fired)
        self._keep_peak()

    async def restore(self) -> None:
        """Read the stored equity peak back (a trader's start); raises ``StorageError``."""
        if self._peaks is None or not self.watching:
            return
        stored = await self._peaks.load_peak(self.symbol)
        if stored is not None:
            self._watch.peak, self._watch.peak_capital = stored
            self._stored_peak = stored
            log.info("risk_peak_restored", peak=str(stored[0]), capital=str(stored[1]))

    def _keep_peak(self) -> None:
        """Store the peak when it changed (at most every ``PEAK_SAVE_INTERVAL``)."""
        peak = self._watch.peak
        if self._peaks is None or peak is None:
            return
        current = (peak, self._watch.peak_capital)
        now = self._wall()
        saving = self._saving is not None and not self._saving.done()
        if current == self._stored_peak or saving or now < self._peak_due:
            return
        self._peak_due = now + PEAK_SAVE_INTERVAL
        self._saving = asyncio.create_task(self._save_peak(current, now))

    async def _save_peak(self, peak: tuple[Decimal, Decimal], at: float) -> None:
        assert self._peaks is not None
        try:
            await self._peaks.save_peak(self.symbol, peak[0], peak[1], at)
        except StorageError as exc:  # kept in memory; stored with the next change
            log.warning("risk_peak_not_stored", error=str(exc))
        else:
            self._stored_peak = peak

    def effective(self, control: Desired | None) -> Desired | None:
        """What the symbol follows: the local hold until the board has a state at least as
        recent (the hold stored, or what a person asked after it), else ``control``."""
        hold = self.hold
        if hold is None:
            return control
        if control is not None and control.at >= hold.at:
            self.hold = None
            return control
        return hold

    async def close(self) -> None:
        """Stop storing; a peak that rose since it was last stored is stored now (within
        ``PEAK_FLUSH_TIMEOUT``: a crash loses at most ``PEAK_SAVE_INTERVAL`` of it)."""
        for task in (self._recording, self._saving):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        peak = self._watch.peak
        if self._peaks is not None and peak is not None:
            current = (peak, self._watch.peak_capital)
            if current != self._stored_peak:
                try:
                    async with asyncio.timeout(PEAK_FLUSH_TIMEOUT):
                        await self._save_peak(current, self._wall())
                except TimeoutError:
                    log.warning("risk_peak_not_stored", error="timed out at shutdown")

    def impose(self, fired: Fired) -> None:
        """Hold the symbol for ``fired`` at once, say so, and store the hold."""
        if self.hold is not None:
            return  # already held here, not yet read back: the first hold stands
        self.hold = hold_of(fired, self._wall())
        log.error(
            "risk_triggered",
            trigger=fired.trigger,
            action=fired.action,
            values=dict(fired.values),
            effect="recorded as desired state; `quantmesh ctl resume` clears it",
        )
        self._metrics.risk_triggered.labels(self.symbol, fired.trigger, fired.action).set(1)
        self._shown = (fired.trigger, fired.action)
        self._notifier.emit(risk_triggered(self.symbol, fired.trigger, fired.reason))
        if self._record is not None:
            self._recording = asyncio.create_task(self._store(fired), name=f"risk:{self.symbol}")

    async def _store(self, fired: Fired) -> None:
        assert self._record is not None
        while True:
            try:
                await self._record(fired)
                return
            except StorageError as exc:  # held here meanwhile; the database must have it
                log.warning("risk_hold_not_stored", error=str(exc), retry_in=self._retry)
                await asyncio.sleep(self._retry)
