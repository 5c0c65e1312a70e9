"""The desired state of every symbol as this instance last read it from the database.

The board is read at start and every ``refresh_interval`` seconds (an instance that does
not own a symbol records a person's request; the owner picks it up at its next read), and
updated at once by a request made on this instance. Never fail open: before the first
successful read a symbol's state is unknown and its trader places nothing; a failed read
later keeps the last state read (logged once per outage).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from quantmesh.control.desired import Action, Desired, desired_after
from quantmesh.errors import StorageError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One control action, as the audit table keeps it."""

    symbol: str
    action: Action
    desired: Desired
    instance: str

    def as_json(self) -> dict[str, object]:
        return {"symbol": self.symbol, "action": self.action, "instance": self.instance} | (
            self.desired.as_json()
        )


class ControlStore(Protocol):
    """Where desired state and the audit of control actions are kept (the database)."""

    async def load_controls(self) -> dict[str, Desired]:
        """The desired state of every symbol that has one (the others are active)."""
        ...

    async def save_control(self, entry: AuditEntry) -> None:
        """Store ``entry.desired`` as the symbol's state and append ``entry`` to the audit,
        in one transaction; ``StorageError`` when it could not be stored."""
        ...

    async def control_audit(self, symbol: str | None, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` entries of the audit, newest first."""
        ...


class ControlBoard:
    """Desired state per symbol, refreshed from a ``ControlStore``."""

    def __init__(
        self,
        store: ControlStore,
        *,
        instance: str,
        refresh_interval: float,
        on_change: Callable[[str, Desired], None] = lambda symbol, desired: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._instance = instance
        self._interval = refresh_interval
        self._on_change = on_change
        self._clock = clock
        self._known: dict[str, Desired] | None = None  # None until the first read
        self._failing = False

    def get(self, symbol: str) -> Desired | None:
        """``symbol``'s desired state; ``None`` while unknown (nothing read yet)."""
        if self._known is None:
            return None
        return self._known.get(symbol, Desired())

    def known(self) -> Mapping[str, Desired] | None:
        return self._known

    async def refresh(self) -> bool:
        """Read every symbol's desired state; False (the last state kept) on failure."""
        try:
            controls = await self._store.load_controls()
        except StorageError as exc:
            if not self._failing:
                log.warning("control_state_not_read", error=str(exc), effect=self._effect())
            self._failing = True
            return False
        if self._failing:
            log.info("control_state_read_again")
        self._failing = False
        self._replace(controls)
        return True

    async def run(self) -> None:
        """Refresh every ``refresh_interval`` seconds until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval)

    async def audit(self, symbol: str | None, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` control actions (of ``symbol``, or all), newest first."""
        return await self._store.control_audit(symbol, limit)

    async def apply(self, symbol: str, action: Action, *, reason: str, actor: str) -> Desired:
        """Record ``action`` for ``symbol`` (state and audit), then act on it here at once.

        ``StorageError`` when the database did not store it: nothing changed anywhere.
        """
        desired = desired_after(action, reason=reason, actor=actor, at=self._clock())
        await self._store.save_control(AuditEntry(symbol, action, desired, self._instance))
        log.warning("control_applied", symbol=symbol, action=action, reason=reason, actor=actor)
        known = dict(self._known or {})
        known[symbol] = desired
        if self._known is not None:
            self._replace(known)
        return desired

    def _replace(self, controls: Mapping[str, Desired]) -> None:
        before = self._known or {}
        self._known = dict(controls)
        for symbol in sorted(set(before) | set(controls)):
            now = controls.get(symbol, Desired())
            if before.get(symbol, Desired()) != now:
                self._on_change(symbol, now)

    def _effect(self) -> str:
        if self._known is None:
            return "nothing is placed until the desired state of the symbols is read"
        return "acting on the desired state read last"
