"""Taking a symbol over from its former owner: how long to wait before trading, and why a
symbol whose grid is in another database is not taken at all. Pure.

A new owner reads the previous ownership record as it writes its own (``Recorded``):
``takeover_grace`` turns that record into a wait while a former owner may still believe
its lease valid; ``other_database`` says, in one line an operator can act on, why a
symbol was last traded from a database this instance cannot reach.
"""

from __future__ import annotations

from typing import Protocol

from quantmesh.coordination.allocation import Member
from quantmesh.coordination.membership import OwnerRecord, Recorded


class Forgets(Protocol):
    """The part of a fleet store that names how an operator deletes a record."""

    def forget_command(self, symbol: str) -> str: ...


def other_database(me: Member, symbol: str, previous: OwnerRecord | None, fleet: Forgets) -> str:
    """Why ``symbol`` is not taken over from its recorded owner on another database, with
    the lock server's own command to delete the record once its orders are cancelled."""
    owner = previous.owner if previous is not None else "another instance"
    if not me.shared_database:
        why = f"this instance's database ({me.database}) is not shared"
    else:
        kind = previous.database if previous is not None else None
        why = f"{owner}'s database ({kind or 'unknown'}) is not shared"
    return (
        f"last traded by {owner}, and {why}: its grid and open orders are not in this "
        "instance's database, so a take-over would start a second grid beside them. "
        f"Trade it from {owner} again; to move it, cancel its open orders, then delete "
        f"its ownership record ({fleet.forget_command(symbol)})"
    )


def takeover_grace(
    recorded: Recorded | None, fence: int, me: str, lease_ttl: float
) -> tuple[float, str]:
    """How long a new owner waits before trading, and why. Pure.

    Normally nothing: the former owner released the symbol, or its lease ran out before
    this one was granted. But the lock server can lose a lease early (a Redis restart
    without persistence, a failover to a replica that missed it) while the former owner
    still believes it valid - until its deadline, at most ``until`` (the end of its last
    recorded renewal) plus the renewal period. Without a record to tell, or with one too
    old to trust, wait a whole lease.
    """
    if recorded is None:
        return lease_ttl, "the ownership record could not be read"
    previous = recorded.previous
    if previous is None:
        return lease_ttl, "no ownership record: the lock server lost its data, or a first start"
    if previous.fence == fence:
        return lease_ttl, "the record was written twice (a retried call): former owner unknown"
    if previous.state == "released" or previous.owner == me:
        return 0.0, ""
    if previous.until is None:
        return lease_ttl, "the ownership record does not say when the lease ends"
    left = previous.until - recorded.now
    if left < -lease_ttl:
        # Older than any live lease could be: the server restored an old snapshot, or the
        # owner could not refresh its record for long - wait a whole lease.
        return (
            lease_ttl,
            "the ownership record is stale: the lock server may have restored old data",
        )
    if left > 0:
        # capped: a server clock that jumped must not park the symbol for hours
        grace = min(left, lease_ttl) + lease_ttl / 3
        return grace, f"{previous.owner}'s lease may still be valid: lost early"
    return 0.0, ""
