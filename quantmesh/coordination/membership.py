"""What every fleet store keeps and answers, whatever server it runs on: the membership
entry of an instance, the ownership record of a symbol, the answers to a heartbeat and to
a record's write, and the ``FleetStore`` protocol the coordinator uses.

The stores (``fleet.Fleet`` on Redis, ``fleet_etcd.EtcdFleet`` on etcd) import this
module; it imports no server's client, so an instance on etcd never loads redis-py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from quantmesh.coordination.allocation import Member, Role

_Raw = TypeVar("_Raw")


@dataclass(frozen=True, slots=True)
class Registration:
    """The answer to a heartbeat: registered, or the other live entry with this id."""

    ok: bool
    other: dict[str, Any] | None = None
    other_left: float = 0.0  # seconds until the other entry lapses unless renewed


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    owner: str
    state: Literal["held", "released"]
    fence: int
    until: float | None  # server clock, seconds: a held lease ends by then at the latest
    # (None: a record of an older version, which did not say)
    since: float  # the owner's wall clock when it took the symbol, seconds
    # whether the owner's database is shared, and its kind (None: a record of an older
    # version, which did not say)
    shared: bool | None = None
    database: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer to ``record_owner``."""

    stored: bool  # False: a newer owner's record is stored, or another database's
    previous: OwnerRecord | None
    now: float  # server clock, seconds
    # Not stored because the previous owner is another instance and the symbol cannot move
    # between the two databases (one of them is not shared): its grid is not ours to take.
    other_database: bool = False


class FleetStore(Protocol):
    """What the coordinator needs of a fleet's store: membership heartbeats and ownership
    records (``Fleet`` on Redis, ``EtcdFleet`` on etcd)."""

    me: Member
    ttl: float
    token: str

    async def heartbeat(self, symbols: frozenset[str] | None = None) -> Registration: ...

    async def members(self) -> list[Member]: ...

    async def leave(self) -> bool: ...

    async def record_owner(self, symbol: str, state: str, fence: int, since: float) -> Recorded: ...

    @property
    def owners_key(self) -> str: ...

    def forget_command(self, symbol: str) -> str:
        """The command an operator runs to delete ``symbol``'s ownership record."""
        ...

    async def owner(self, symbol: str) -> OwnerRecord | None: ...

    async def owners(self) -> dict[str, OwnerRecord]: ...


def entry_of(me: Member, token: str, host: str, symbols: frozenset[str] | None) -> dict[str, Any]:
    """This instance's membership entry, claiming ``symbols`` (default: all of its own)."""
    return {
        "id": me.id,
        "token": token,
        "role": me.role,
        "symbols": sorted(me.symbols if symbols is None else symbols),
        "host": host,
        "pid": os.getpid(),
        "database": me.database,
        "database_shared": me.shared_database,
    }


def member_of_entry(raw: _Raw, decode: Callable[[_Raw], str]) -> Member | None:
    """A membership entry (``raw``, turned into JSON text by ``decode``) as a ``Member``;
    None for a peer this version cannot read, decoding included."""
    try:
        info = json.loads(decode(raw))
        database = info.get("database")
        return Member(
            info["id"],
            info["role"],
            frozenset(info["symbols"]),
            database if isinstance(database, str) else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def member_of(
    instance_id: str, role: str, symbols: Iterable[str], database: str | None = None
) -> Member:
    """This instance as the fleet sees it; ``database`` is its ``database.type``."""
    as_role: Role = "standby" if role == "standby" else "master"
    return Member(instance_id, as_role, frozenset(symbols), database)


def record_refusal(previous: OwnerRecord | None, me: Member, state: str, fence: int) -> int:
    """Why an ownership record is not written, as the Redis script answers: 0 written, 1 a newer
    fence or a late refresh of a released lease, 2 another instance's grid on a database
    that is not shared. Pure."""
    if previous is None:
        return 0
    late = previous.fence == fence and previous.state == "released"
    if previous.fence > fence or (late and state == "held"):
        return 1
    if (
        state == "held"
        and previous.owner != me.id
        and (not me.shared_database or previous.shared is False)
    ):
        return 2
    return 0
