"""Which symbols an instance wants to trade, given the live members of the fleet. Pure.

- ``static``, role ``master``: its own configured symbols, always. Two masters configured
  with one symbol both want it; the ownership lease lets one trade it, the other waits.
- ``static``, role ``standby``: its configured symbols that no live master claims. When a
  master's heartbeat lapses, its symbols become wanted; when it is back, they are handed
  back (the standby stops and releases before the master starts).
- ``dynamic``: each symbol goes to the live member, among those configured with it, that
  wins rendezvous hashing (highest hash of member id and symbol). A join or a leave moves
  only the symbols whose winner changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Mode = Literal["static", "dynamic"]
Role = Literal["master", "standby"]


# The one database kind that is never shared between instances: a SQLite file is local.
UNSHARED_DATABASES = frozenset({"sqlite"})


def shared_database(kind: str | None) -> bool:
    """Whether a database of this kind (``database.type``) can be shared by instances.

    ``None`` - a member that does not say, from a version before members published it -
    counts as shared: those versions refused a fleet on SQLite."""
    return kind not in UNSHARED_DATABASES


@dataclass(frozen=True, slots=True)
class Member:
    """One live instance as its heartbeat describes it."""

    id: str
    role: Role
    symbols: frozenset[str]
    database: str | None = None  # database.type; None when the member does not say

    @property
    def shared_database(self) -> bool:
        """Whether the grids this member trades are in a database other instances share:
        only then can a symbol move between it and another instance."""
        return shared_database(self.database)


def rendezvous_weight(member_id: str, symbol: str) -> int:
    """The member's weight for ``symbol``: the same on every instance and every run."""
    digest = hashlib.blake2b(f"{member_id}\x00{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(symbol: str, members: Iterable[Member]) -> str | None:
    """The id of the master that should trade ``symbol``, ``None`` if no live master is
    configured with it. Equal weights (never seen in practice) go to the smaller id."""
    candidates = [m for m in members if symbol in m.symbols and m.role == "master"]
    if not candidates:
        return None
    return min(candidates, key=lambda m: (-rendezvous_weight(m.id, symbol), m.id)).id


def wanted(mode: Mode, me: Member, members: Iterable[Member]) -> frozenset[str]:
    """The symbols ``me`` should hold, given the other live ``members``."""
    others = [m for m in members if m.id != me.id]
    if mode == "dynamic":
        fleet = [me, *others]
        return frozenset(s for s in me.symbols if rendezvous_owner(s, fleet) == me.id)
    if me.role == "master":
        return me.symbols
    claimed = {s for m in others if m.role == "master" for s in m.symbols}
    return me.symbols - claimed
