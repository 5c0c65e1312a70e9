"""Ownership of symbols: which ones this instance trades, and the leases that prove it.

With a fleet (on the lock server: Redis or etcd), a symbol is traded only under its
ownership lease ``{order:<exchange>:<SYMBOL>}:owner``:

- taken with try-lock, renewed every third of ``lease_ttl`` by a watchdog;
- fenced: the fence goes into every grid write, so a former owner's late writes are
  refused;
- released when the instance hands the symbol over or stops;
- lost on a refused renewal, or no renewal before its deadline: that cancels the
  symbol's trader at once. Every exchange call also checks the lease right before it goes.

Beside each lease, the symbol's ownership record in the fleet store says who traded it
last (``records``): written when the lease is taken, refreshed while it is held, marked
released on a clean hand-off.

Which symbols an instance *wants* follows ``allocation.wanted`` over the live members,
refreshed with every membership heartbeat (every third of ``lease_ttl``). An instance
that wants a symbol held elsewhere tries again every ``check_interval``; one that holds a
symbol it no longer wants (a master came back, the hash moved it) stops its trader,
then releases - a clean hand-off.

The configured symbols can change while the instance runs (``configure``, a reload): the
wanted set follows at once, and a heartbeat sent at once lists them for the other
members. An added symbol is claimed like any other (lease, record, take-over grace); a
removed one is no longer wanted nor listed.

A symbol's grid lives in the database of the instance that trades it, so two rules keep
it from being split over two databases:

- an instance whose database is not shared (SQLite) never claims a symbol another live
  member lists: it gives that symbol up for the rest of its run and stops listing it
  (log ``symbol_not_claimed``, ``not_claimed`` in status);
- no instance takes a symbol over from another when either database is not shared: the
  ownership record says who traded it last, on which kind of database (``fleet``); such
  a symbol is given up the same way.

With ``fallback_mode: single_instance`` all of this holds while the lock server is
healthy. While it is down (``fallback``), nothing is claimed; a symbol this instance owns
keeps trading on the local lock if no other live member listed it when the server was
last reachable, and stops when its lease ends otherwise (that member may take it over).

Without a fleet (one instance, no lock server) every configured symbol is owned at once,
with a fence from the wall clock in microseconds so a restart writes above the last run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from quantmesh.cancel import cancel_and_wait, cancelling
from quantmesh.coordination.allocation import Member, Mode, wanted
from quantmesh.coordination.fallback import FallbackLeases
from quantmesh.coordination.membership import member_of
from quantmesh.coordination.records import RECORD_TIMEOUT, NotTaken, OwnerRecords
from quantmesh.errors import InstanceIdInUse, LockError, LockTimeout
from quantmesh.lock.base import DistributedLock
from quantmesh.lock.keys import LockKeys
from quantmesh.lock.renewal import renewed
from quantmesh.notify.events import NOP, Notifier
from quantmesh.observability.metrics import Metrics

if TYPE_CHECKING:
    from quantmesh.coordination.membership import FleetStore

__all__ = ["Claim", "Coordinator", "LocalFallback", "member_of"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """This instance owns ``symbol``: its fence, whether the lease is still valid, and
    until when (a ``time.monotonic()`` value; infinite for an instance alone)."""

    symbol: str
    fence: int
    valid: Callable[[], bool]
    deadline: Callable[[], float] = lambda: math.inf


@dataclass(frozen=True, slots=True)
class LocalFallback:
    """The lock's local fallback (``fallback_mode: single_instance``): whether it is in
    use now (the lock server down), and a health check of the backend to run now."""

    active: Callable[[], bool]
    check: Callable[[], Awaitable[object]]


class Coordinator:
    """Decides when this instance trades each of its configured symbols."""

    def __init__(
        self,
        me: Member,
        *,
        metrics: Metrics,
        mode: Mode = "static",
        fleet: FleetStore | None = None,
        locker: DistributedLock | None = None,
        keys: LockKeys | None = None,
        lease_ttl: float = 10.0,
        check_interval: float = 2.0,
        fallback: LocalFallback | None = None,
        wall_clock: Callable[[], float] = time.time,
        notifier: Notifier = NOP,
    ) -> None:
        if fleet is not None and (locker is None or keys is None):
            raise ValueError("a fleet needs the lock and its keys for the ownership leases")
        self.me = me
        self.mode = mode
        self._fleet = fleet
        self._fallback = fallback
        self._leases: FallbackLeases | None = None
        if fleet is not None and locker is not None and fallback is not None:
            self._leases = FallbackLeases(
                locker, active=fallback.active, check=fallback.check, keep=self._may_keep
            )
            locker = self._leases
        self._locker = locker
        self._keys = keys
        self._owner_keys = {keys.owner_key(s): s for s in me.symbols} if keys is not None else {}
        self.lease_ttl = lease_ttl
        self.check_interval = check_interval
        self._metrics = metrics
        self._wall = wall_clock
        self.members: list[Member] = [me]
        self.owned: set[str] = set()
        self._records: OwnerRecords | None = None
        if fleet is not None:
            self._records = OwnerRecords(
                fleet,
                lease_ttl=lease_ttl,
                metrics=metrics,
                notifier=notifier,
                wall=wall_clock,
                paused=lambda: fallback is not None and fallback.active(),
                not_claim=self._not_claim,
            )
        self._wanted: frozenset[str] = me.symbols if fleet is None else frozenset()
        self._change = asyncio.Event()
        self._beat_now = asyncio.Event()  # the configured symbols changed: publish them
        self.registered = asyncio.Event()
        self._holders: dict[str, str] = {}  # who holds the symbols we wait for, as last logged
        self._fleet_error: str | None = None
        self._joined_at: float | None = None
        self._shared: dict[str, list[str]] = {}  # other masters configured with our symbols
        self._failed: set[str] = set()  # symbols that failed here for good
        self._not_claimed: dict[str, str] = {}  # symbols given up here, and why
        self._keeping: dict[str, bool] = {}  # server down: whether each owned symbol is kept
        if fleet is None:
            self.registered.set()
        for symbol in me.symbols:
            metrics.symbol_owned.labels(symbol).set(0)
            metrics.failovers.labels(symbol)  # exported from the start, at 0

    @property
    def failovers(self) -> list[dict[str, object]]:
        """The most recent take-overs by this instance (``recent_failovers`` in status)."""
        return self._records.failovers if self._records is not None else []

    @property
    def leased(self) -> bool:
        """Whether symbols are owned through leases on the lock server (several instances)."""
        return self._fleet is not None

    def wants(self, symbol: str) -> bool:
        return self.registered.is_set() and symbol in self._wanted

    # waiting -------------------------------------------------------------------------

    async def _next_change(self) -> None:
        event = self._change
        await event.wait()

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def wait_wanted(self, symbol: str) -> None:
        while not self.wants(symbol):
            await self._next_change()

    async def wait_unwanted(self, symbol: str) -> None:
        while self.wants(symbol):
            await self._next_change()

    async def retry_pause(self, symbol: str) -> None:
        """Between tries for a symbol held elsewhere: ``check_interval``, or until the
        wanted set changes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.check_interval):
                await self.wait_unwanted(symbol)

    # membership ----------------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeats and the fleet view, every third of ``lease_ttl``, until cancelled.

        Raises ``InstanceIdInUse`` when another live instance has this instance's id.
        Returns at once without a fleet.
        """
        if self._fleet is None:
            return
        while True:
            try:
                await self._beat(self._fleet)
            except InstanceIdInUse:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the last view; leases stay safe
                # The server unreachable, or a member entry this version cannot read (a peer on
                # another version during a rolling upgrade): the last view stands.
                if self._fleet_error is None:
                    log.warning("fleet_unreachable", error=f"{type(exc).__name__}: {exc}")
                self._fleet_error = str(exc)
            else:
                if self._fleet_error is not None:
                    log.info("fleet_reachable")
                    self._keeping.clear()  # the next outage logs its decisions again
                self._fleet_error = None
            if cancelling():  # swallowed by the client as it answered: stop now
                raise asyncio.CancelledError
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease_ttl / 3):
                    await self._beat_now.wait()
            self._beat_now.clear()

    def _current(self) -> Member:
        """This instance as it presents itself now: without the symbols that failed here
        for good (another instance may trade them) or that it gave up (not its to trade)."""
        if not self._failed and not self._not_claimed:
            return self.me
        symbols = self.me.symbols - self._failed - set(self._not_claimed)
        return Member(self.me.id, self.me.role, symbols, self.me.database)

    def drop(self, symbol: str) -> None:
        """``symbol`` failed here for good: stop claiming it."""
        self._failed.add(symbol)
        self._wanted = self._wanted - {symbol}
        self._changed()

    def retry(self, symbol: str) -> None:
        """``symbol`` failed here for good and was given new settings: list it and claim it
        again, as at start (in a fleet, under its ownership lease)."""
        if symbol not in self._failed:
            return
        self._failed.discard(symbol)
        log.info("symbol_retried", symbol=symbol)
        self._recompute()

    def _recompute(self) -> None:
        """What is wanted after this instance's symbols changed: at once alone; in a fleet
        from the members seen, and the others told by a heartbeat sent at once."""
        if self._fleet is None:
            self._wanted = self._current().symbols
            self._changed()
            return
        if self.registered.is_set():  # else the first heartbeat computes what is wanted
            self._set_view(self.members)
        self._beat_now.set()

    def configure(self, symbols: Iterable[str]) -> None:
        """This instance is configured with ``symbols`` from now on (a reload).

        The wanted set follows at once, and the membership entry at a heartbeat sent at
        once. An added symbol is claimed as at start: wanted as the allocation says, then
        taken under its ownership lease at its slot's next try (record, take-over grace).
        A removed one is no longer wanted nor listed, as with ``drop``: a slot still
        trading it hands it off and releases it. A symbol that failed here for good and is
        configured again is claimed again; one given up (``not_claimed``) stays given up
        for the run: its grid may be in another database.
        """
        new = frozenset(symbols)
        added, removed = new - self.me.symbols, self.me.symbols - new
        if not added and not removed:
            return
        self.me = Member(self.me.id, self.me.role, new, self.me.database)
        self._failed -= added | removed
        for symbol in removed:
            self._holders.pop(symbol, None)
        for symbol in added:
            if self._keys is not None:
                self._owner_keys[self._keys.owner_key(symbol)] = symbol
            self._metrics.symbol_owned.labels(symbol).set(int(symbol in self.owned))
            self._metrics.failovers.labels(symbol)
        log.info("symbols_configured", added=sorted(added), removed=sorted(removed))
        self._recompute()

    async def _beat(self, fleet: FleetStore) -> None:
        registration = await fleet.heartbeat(self._current().symbols)
        if not registration.ok and not self.registered.is_set():
            # At start an entry with our id may be a killed predecessor's, not yet lapsed:
            # wait for it to lapse, and refuse only if it is renewed meanwhile.
            other = registration.other or {}
            log.warning(
                "instance_id_held",
                host=other.get("host"),
                pid=other.get("pid"),
                wait=round(registration.other_left, 1),
                detail="another entry with this instance id is alive; waiting to see "
                "whether it is renewed",
            )
            await asyncio.sleep(registration.other_left + 0.2)
            registration = await fleet.heartbeat(self._current().symbols)
        if not registration.ok:
            other = registration.other or {}
            raise InstanceIdInUse(
                f"instance id {self.me.id!r} is in use by a live instance (host "
                f"{other.get('host')}, pid {other.get('pid')}): give every instance its own "
                "instance.id or INSTANCE_ID"
            )
        if self._joined_at is None:
            self._joined_at = asyncio.get_running_loop().time()
            log.info("fleet_joined", role=self.me.role, mode=self.mode)
        members = await fleet.members()
        if all(m.id != self.me.id for m in members):
            members.append(self.me)
        self._metrics.fleet_members.set(len(members))
        self._set_view(members)
        self.registered.set()

    def _set_view(self, members: list[Member]) -> None:
        before = {m.id for m in self.members}
        after = {m.id for m in members}
        if before != after and self.registered.is_set():
            log.info(
                "fleet_changed",
                joined=sorted(after - before),
                left=sorted(before - after),
                members=len(after),
            )
        self.members = members
        self._note_shared(members)
        self._refuse_listed_elsewhere(members)
        new = wanted(self.mode, self._current(), members)
        if self.me.role == "standby" and self._settling():
            new = frozenset()
        if new != self._wanted or not self.registered.is_set():
            if self.me.symbols != new or self._wanted:
                log.info(
                    "assignment",
                    wanted=sorted(new),
                    gained=sorted(new - self._wanted),
                    dropped=sorted(self._wanted - new),
                )
            self._wanted = new
            self._changed()

    def _note_shared(self, members: list[Member]) -> None:
        """Static masters configured with the same symbols: say so, once per change (the
        lease lets one trade each symbol; the others wait and take over if it fails)."""
        if self.mode != "static" or self.me.role != "master":
            return
        shared = {
            m.id: sorted(m.symbols & self.me.symbols)
            for m in members
            if m.id != self.me.id and m.role == "master" and m.symbols & self.me.symbols
        }
        if shared != self._shared:
            self._shared = shared
            if shared:
                log.warning(
                    "symbols_configured_elsewhere",
                    instances=shared,
                    detail="one instance trades each of these symbols, the others wait",
                )

    def _refuse_listed_elsewhere(self, members: list[Member]) -> None:
        """With a database that is not shared, give up every symbol another live member
        lists, unless this instance owns it now: claiming it would leave the symbol's grid
        in two databases (a later take-over either way starts an empty grid beside the
        other's open orders)."""
        if self.me.shared_database:
            return
        for symbol in sorted(self._current().symbols - self.owned):
            others = sorted(m.id for m in members if m.id != self.me.id and symbol in m.symbols)
            if others:
                self._not_claim(
                    symbol,
                    f"also listed by {', '.join(others)}, and this instance's database "
                    f"({self.me.database}) is not shared: the symbol's grid would be kept "
                    "in two databases. List it in one instance only, or give every "
                    "instance one shared postgres or mysql database",
                )

    def _not_claim(self, symbol: str, reason: str) -> None:
        """``symbol`` is not this instance's to trade: never claim it in this run, and stop
        listing it (an instance that may trade it then does not see it listed here)."""
        if symbol in self._not_claimed:
            return
        self._not_claimed[symbol] = reason
        self._wanted = self._wanted - {symbol}
        self._changed()
        log.error("symbol_not_claimed", symbol=symbol, reason=reason)

    def _may_keep(self, key: str) -> bool:
        """The lock server is down (``fallback_mode: single_instance``): whether the symbol of the
        ownership lease ``key`` keeps trading on the local lock. Only if no other member
        listed it when the server was last reachable: one that did may take it over meanwhile."""
        symbol = self._owner_keys.get(key)
        if symbol is None:
            return False
        others = sorted(m.id for m in self.members if m.id != self.me.id and symbol in m.symbols)
        keep = not others
        if self._keeping.get(symbol) != keep:
            self._keeping[symbol] = keep
            if not keep:
                log.error(
                    "ownership_not_kept",
                    symbol=symbol,
                    listed_by=others,
                    detail="the lock server is down: the symbol stops when its lease ends, since "
                    "these instances list it too and may take it over",
                )
        return keep

    def _settling(self) -> bool:
        """A standby claims nothing during its first ``lease_ttl`` in the fleet: masters
        starting beside it have that long to register, and every live one has renewed its
        heartbeat by then, so it does not take (and hand back) their symbols."""
        if self._joined_at is None:
            return True
        return asyncio.get_running_loop().time() - self._joined_at < self.lease_ttl

    async def leave(self) -> None:
        """Drop the membership at once on a clean stop (a standby need not wait for it to
        lapse). Best effort: a failure leaves it to lapse."""
        if self._fleet is None:
            return
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                await self._fleet.leave()
        except (LockError, TimeoutError) as exc:
            log.warning("fleet_leave_failed", error=str(exc) or "timeout")

    # ownership -----------------------------------------------------------------------

    @asynccontextmanager
    async def own(self, symbol: str) -> AsyncIterator[Claim]:
        """Own ``symbol`` for the block.

        Raises ``LockTimeout`` when another instance holds it, ``LockUnavailable`` when the
        lock backend cannot grant it, and ``LockLost`` (at the block's current await) when
        the lease is lost while the block runs.
        """
        records = self._records
        if records is None or self._locker is None or self._keys is None:
            self._took(symbol)
            try:
                yield Claim(symbol, int(self._wall() * 1_000_000), lambda: True)
            finally:
                self._gave_up(symbol, "released")
            return
        acquired = False
        try:
            async with renewed(self._locker, self._keys.owner_key(symbol), self.lease_ttl) as held:
                acquired = True
                self._took(symbol)
                since = self._wall()
                grace = await records.take(self.me, symbol, held.fence, since)
                keeper = asyncio.create_task(
                    records.keep(symbol, held, since), name=f"owner-record:{symbol}"
                )
                try:
                    await asyncio.sleep(grace)
                    yield Claim(symbol, held.fence, held.valid, held.deadline)
                except asyncio.CancelledError:
                    if held.lost:  # the watchdog cancelled us: say so before cleaning up
                        self._lost(symbol, "lease lost")
                    raise
                finally:
                    await cancel_and_wait(keeper)
                    if held.valid():  # handed back, not lost: the next owner is no failover
                        await records.write(symbol, "released", held.fence, since)
        except LockError as exc:
            if isinstance(exc, LockTimeout):  # held elsewhere (not: the server down)
                await self._note_holder(records, symbol)
            elif acquired and symbol in self.owned and not isinstance(exc, NotTaken):
                self._lost(symbol, str(exc))
            raise
        finally:
            if symbol in self.owned:
                self._gave_up(symbol, "released")

    def _lost(self, symbol: str, reason: str) -> None:
        self._gave_up(symbol, "lost")
        log.error("symbol_ownership_lost", symbol=symbol, reason=reason)

    def _took(self, symbol: str) -> None:
        self.owned.add(symbol)
        self._holders.pop(symbol, None)
        self._metrics.symbol_owned.labels(symbol).set(1)
        self._metrics.ownership_changes.labels(symbol, "acquired").inc()
        log.info("symbol_acquired", symbol=symbol)

    def _gave_up(self, symbol: str, event: str) -> None:
        self.owned.discard(symbol)
        self._metrics.symbol_owned.labels(symbol).set(0)
        self._metrics.ownership_changes.labels(symbol, event).inc()
        if event == "released":
            log.info("symbol_released", symbol=symbol)

    async def _note_holder(self, records: OwnerRecords, symbol: str) -> None:
        """Log who holds a symbol we want, once per holder."""
        holder = await records.holder(symbol)
        if holder is not None and self._holders.get(symbol) != holder:
            self._holders[symbol] = holder
            log.info("symbol_owned_elsewhere", symbol=symbol, owner=holder)

    def status(self) -> dict[str, object]:
        """The ``ownership`` section of ``/api/status``."""
        return {
            "mode": self.mode if self.leased else "single_instance",
            "owned": sorted(self.owned),
            "wanted": sorted(self._wanted) if self.registered.is_set() else [],
            "waiting_for": {
                symbol: holder
                for symbol, holder in sorted(self._holders.items())
                if self.wants(symbol) and symbol not in self.owned
            },
            "members": sorted(m.id for m in self.members),
            "recent_failovers": list(self.failovers),
            "database": self.me.database,
            "database_shared": self.me.shared_database,
            # symbols given up for this run, and why (another database's grid)
            "not_claimed": dict(sorted(self._not_claimed.items())),
            # the lock server down (fallback_mode single_instance): owned symbols trading on the
            # local lock
            "kept_locally": sorted(
                self._owner_keys[key]
                for key in (self._leases.kept_keys() if self._leases is not None else ())
                if key in self._owner_keys
            ),
        }
