"""The ownership records a coordinator keeps in its fleet store, beside the leases.

The lease decides who trades; the record (``FleetStore.record_owner``) says who traded a
symbol last, until when, and on which kind of database. Once this instance holds a
symbol's ownership lease:

- ``take`` records it as the owner and reads the previous record. A symbol last traded
  from another instance on a database that is not shared is not taken (``NotTaken``), nor
  one whose record could not be written while this instance's own database is not
  shared; a newer owner's record means the lease is lost already (``LockLost``). A
  take-over from an owner that never released the symbol is counted (``failovers``, the
  metric, a notification). It returns how long to wait before trading
  (``takeover.takeover_grace``);
- ``keep`` refreshes the record every third of the lease while the lease is held; a
  newer owner's record ends the lease (``ownership_superseded``);
- ``write`` is one record (``released`` on a clean hand-off);
- ``holder`` reads who is recorded as holding a symbol this instance waits for.

Every call to the store is bounded by ``RECORD_TIMEOUT``; one that fails is logged and
answers ``None``: bookkeeping never holds up taking or giving back a symbol for longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from quantmesh.cancel import cancelling
from quantmesh.coordination.allocation import Member
from quantmesh.coordination.membership import FleetStore, Recorded
from quantmesh.coordination.takeover import other_database, takeover_grace
from quantmesh.errors import LockError, LockLost, LockUnavailable
from quantmesh.lock.renewal import RenewedLease
from quantmesh.notify.events import Notifier, symbol_taken_over
from quantmesh.observability.metrics import Metrics

log = structlog.get_logger(__name__)

RECORD_TIMEOUT = 2.0
_RECENT = 10  # take-overs kept for /api/status


class NotTaken(LockUnavailable):
    """The lease was granted but the symbol is not this instance's to trade (its record
    names an instance on another database, or could not be written): given back."""


class OwnerRecords:
    """One instance's ownership records in ``fleet`` (see the module docstring).

    ``paused()``: the lease is kept on the local lock now (the lock server is down,
    ``fallback_mode: single_instance``), so the record waits; ``not_claim(symbol,
    reason)``: the symbol is given up for the run."""

    def __init__(
        self,
        fleet: FleetStore,
        *,
        lease_ttl: float,
        metrics: Metrics,
        notifier: Notifier,
        wall: Callable[[], float],
        paused: Callable[[], bool],
        not_claim: Callable[[str, str], None],
    ) -> None:
        self.fleet = fleet
        self.lease_ttl = lease_ttl
        self._metrics = metrics
        self._notifier = notifier  # told of take-overs (only the new owner sees one)
        self._wall = wall
        self._paused = paused
        self._not_claim = not_claim
        self.failovers: list[dict[str, object]] = []  # the most recent take-overs

    async def take(self, me: Member, symbol: str, fence: int, since: float) -> float:
        """Record ``me`` as the owner and count a failover when the previous owner never
        released the symbol. Returns how long to wait before trading: while a former
        owner may still believe it trades the symbol."""
        recorded = await self.write(symbol, "held", fence, since)
        if recorded is not None and recorded.other_database:
            reason = other_database(me, symbol, recorded.previous, self.fleet)
            self._not_claim(symbol, reason)
            raise NotTaken(f"{symbol}: {reason}")
        if recorded is None and not me.shared_database:
            # Without its record, a later take-over by another instance could not tell
            # that the symbol's grid is in this instance's database.
            raise NotTaken(
                f"{symbol}: the ownership record could not be written, and this instance's "
                "database is not shared: it trades a symbol only once recorded as its owner"
            )
        if recorded is not None and not recorded.stored:
            raise LockLost(f"{symbol}: a newer owner is recorded")
        if recorded is not None:
            self._count_take_over(me, symbol, recorded)
        grace, reason = takeover_grace(recorded, fence, me.id, self.lease_ttl)
        if grace > 0:
            log.warning("ownership_grace", symbol=symbol, seconds=round(grace, 2), reason=reason)
        return grace

    def _count_take_over(self, me: Member, symbol: str, recorded: Recorded) -> None:
        """A previous owner that never released the symbol: a failover."""
        previous = recorded.previous
        if previous is None or previous.owner == me.id or previous.state != "held":
            return
        self._metrics.failovers.labels(symbol).inc()
        took_over = {
            "symbol": symbol,
            "from": previous.owner,
            "at": self._wall(),
            "previous_since": previous.since,
        }
        self.failovers = [*self.failovers[-(_RECENT - 1) :], took_over]
        log.warning("symbol_taken_over", symbol=symbol, previous_owner=previous.owner)
        # unowned since the former owner's last renewal (its record's until - a lease)
        gap = None
        if previous.until is not None:
            gap = max(recorded.now - (previous.until - self.lease_ttl), 0.0)
        self._notifier.emit(symbol_taken_over(symbol, previous.owner, gap))

    async def keep(self, symbol: str, held: RenewedLease, since: float) -> None:
        """Keep the ownership record's ``until`` ahead while the lease is held; a newer
        owner's record means the lease is gone, whatever its deadline says."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            if not held.valid():
                return
            if self._paused():
                continue  # the server is down: the lease is kept locally, the record waits
            recorded = await self.write(symbol, "held", held.fence, since)
            if cancelling():
                # A cancellation the client swallowed as it answered (Python 3.11's wait_for
                # in redis-py): end here, or the hand-off waits out cancel_and_wait's patience.
                raise asyncio.CancelledError
            if recorded is not None and not recorded.stored:
                held.lost = True  # nothing more is sent; the watchdog ends the block
                log.error("ownership_superseded", symbol=symbol, fence=held.fence)
                return

    async def write(self, symbol: str, state: str, fence: int, since: float) -> Recorded | None:
        """One ownership record; ``None`` when the store did not answer in time."""
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                return await self.fleet.record_owner(symbol, state, fence, since)
        except (LockError, TimeoutError) as exc:
            log.warning("ownership_record_failed", symbol=symbol, error=str(exc) or "timeout")
            return None

    async def holder(self, symbol: str) -> str | None:
        """Who is recorded as holding ``symbol`` (``unknown`` without a record); ``None``
        when the store did not answer in time."""
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                record = await self.fleet.owner(symbol)
        except (LockError, TimeoutError):
            return None
        return record.owner if record is not None else "unknown"
