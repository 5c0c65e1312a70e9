"""The fleet on etcd: membership heartbeats and the record of who owns which symbol.

The same records and answers (``quantmesh.coordination.membership``) as ``Fleet`` on Redis,
through etcd's v3 JSON gateway (``EtcdGateway``, the lock's client). Keys, under the lock
prefix (``quantmesh:lock:{fleet:binance}:...``):

- ``members/<id>``: JSON (id, token, role, symbols, host, pid, database kind and whether
  it is shared), attached to this process's membership lease of ``ceil(ttl)`` seconds
  (etcd counts leases in whole seconds and grants at least one and a half election
  timeouts: an entry may outlive its last heartbeat by more than ``ttl``);
- ``owners/<symbol>``: JSON (owner, state ``held`` or ``released``, fence, since, the
  owner's database kind and whether it is shared), attached to no lease: it outlives
  its writer, as the memory of where a symbol's grid lives;
- ``held/<symbol>``: while a record says ``held``, a key attached to a lease of
  ``ceil(ttl)`` seconds that each refresh of the record keeps alive.

Membership. A heartbeat keeps the process's lease alive (or grants a new one when it
lapsed) and writes its entry in one transaction: if the key is under our lease, put;
else, if it is absent, put under our lease; else read it. An entry under another lease
holding another token is another live instance with this id: refused, with the time its
lease has left. A lapsed entry needs no sweep: etcd deletes a key with its lease. A
clean stop deletes the entry (if it is under our lease) and revokes the lease.

Owners. ``record_owner`` reads the record, decides as the Redis script does (a newer
fence, a late refresh of a released lease, or another instance's record with a database
that is not shared refuse the write), and writes only if the record was not changed
since the read (a transaction comparing its modification revision); a concurrent write
makes it read and decide again.

Time. etcd has no clock to read; its lease TTLs are counted by the server. The times of
a record therefore come from the reader: ``Recorded.now`` is this process's wall clock
when the record was read, and a held record's ``until`` is that instant plus what etcd
says its ``held`` lease has left (rounded up to the next second, plus etcd's expiry
sweep, so never before the record's lease can end). A held record whose lease is gone
ended at an unknown time: ``until`` is ``now``. ``until - now`` is thus measured on etcd,
and no two hosts' clocks are compared.

Errors. Every request goes through the gateway: no member answering is
``LockUnavailable``, anything else ``LockError`` - the fleet fails closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import secrets
import socket
import time
from dataclasses import replace
from functools import partial
from typing import Any, Literal

from quantmesh.coordination.allocation import Member
from quantmesh.coordination.membership import (
    OwnerRecord,
    Recorded,
    Registration,
    entry_of,
    member_of_entry,
    record_refusal,
)
from quantmesh.errors import LockError
from quantmesh.lock.etcd import EtcdClient, EtcdNotFound, parsed

# etcd reports a lease's time left in whole seconds, rounded down, and revokes expired
# leases in a sweep every half second: what is added for an upper bound.
_LEFT_SLACK = 1.5
_WRITE_ATTEMPTS = 5  # reads and writes of a record that others keep changing


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


def _range_end(prefix: str) -> str:
    """The end of the key range of every key starting with ``prefix`` (ASCII)."""
    return _b64(prefix[:-1] + chr(ord(prefix[-1]) + 1))


class EtcdFleet:
    """Membership and ownership records of one exchange's fleet, on etcd."""

    def __init__(
        self, client: EtcdClient, *, prefix: str, exchange: str, me: Member, ttl: float
    ) -> None:
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"the fleet's ttl must be a positive number of seconds, got {ttl!r}")
        self._client = client
        base = f"{prefix}{{fleet:{exchange}}}"
        self._members = f"{base}:members/"
        self._owners = f"{base}:owners/"
        self._held = f"{base}:held/"
        self.me = me
        self.ttl = ttl
        self._seconds = max(1, math.ceil(ttl))
        self.token = secrets.token_hex(12)
        self._host = socket.gethostname()
        self._lease: int | None = None  # the membership lease
        self._held_leases: dict[str, tuple[int, int]] = {}  # symbol -> fence, its lease

    async def _call(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        return await self._client.call(path, body, f"fleet {what}")

    # leases ------------------------------------------------------------------------------

    async def _alive(self, lease: int, what: str) -> bool:
        """Keep ``lease`` alive; False when it has lapsed or was revoked."""
        try:
            reply = await self._call("/v3/lease/keepalive", {"ID": str(lease)}, what)
        except EtcdNotFound:
            return False
        return parsed(lambda: int(reply.get("result", {}).get("TTL", 0))) > 0

    async def _grant(self, what: str) -> int:
        reply = await self._call("/v3/lease/grant", {"TTL": self._seconds}, what)
        return parsed(lambda: int(reply["ID"]))

    async def _revoke(self, lease: int, what: str) -> None:
        with contextlib.suppress(EtcdNotFound):
            await self._call("/v3/lease/revoke", {"ID": str(lease)}, what)

    async def _left(self, lease: int) -> float | None:
        """An upper bound on the seconds ``lease`` has left; None when it is gone."""
        if not lease:
            return None
        try:
            reply = await self._call("/v3/lease/timetolive", {"ID": str(lease)}, "read")
        except EtcdNotFound:
            return None
        left = parsed(lambda: int(reply.get("TTL", 0)))  # 0 is left out of the JSON
        return None if left < 0 else left + _LEFT_SLACK

    # membership --------------------------------------------------------------------------

    async def heartbeat(self, symbols: frozenset[str] | None = None) -> Registration:
        """Register or renew this instance's membership for ``ttl`` seconds (etcd's whole
        seconds, rounded up), claiming ``symbols`` (default: all it is configured with)."""
        info = entry_of(self.me, self.token, self._host, symbols)
        value = _b64(json.dumps(info))
        for _ in range(_WRITE_ATTEMPTS):
            kv = await self._register(value)
            if kv is None:
                return Registration(True)
            other, other_lease = parsed(partial(_entry, kv))
            if not (isinstance(other, dict) and other.get("token") == self.token):
                left = await self._left(other_lease)
                return Registration(False, other if isinstance(other, dict) else {}, left or 0.0)
            # Our own entry under our former lease, which lapsed and is not yet deleted:
            # moved under the new lease unless it changed meanwhile.
            name = _b64(self._members + self.me.id)
            put = {"request_put": {"key": name, "value": value, "lease": str(self._lease)}}
            body = {"compare": [_unchanged(name, kv)], "success": [put]}
            if (await self._call("/v3/kv/txn", body, "heartbeat")).get("succeeded"):
                return Registration(True)
        raise LockError(f"fleet heartbeat: changed by others {_WRITE_ATTEMPTS} times")

    async def _register(self, value: str) -> dict[str, Any] | None:
        """Keep the membership lease alive (or grant one) and put our entry under it
        unless another lease's entry is there; that entry, None when registered."""
        if self._lease is None or not await self._alive(self._lease, "heartbeat"):
            self._lease = None
            self._lease = await self._grant("heartbeat")
        lease = str(self._lease)
        name = _b64(self._members + self.me.id)
        put = {"request_put": {"key": name, "value": value, "lease": lease}}
        reply = await self._call(
            "/v3/kv/txn",
            {
                "compare": [{"key": name, "target": "LEASE", "result": "EQUAL", "lease": lease}],
                "success": [put],
                "failure": [
                    {
                        "request_txn": {
                            "compare": [_absent(name)],
                            "success": [put],
                            "failure": [{"request_range": {"key": name}}],
                        }
                    }
                ],
            },
            "heartbeat",
        )
        return parsed(lambda: _refused(reply))

    async def members(self) -> list[Member]:
        """Every member whose lease has not lapsed (this one included, if registered)."""
        found = [member_of_entry(kv, _value) for kv in await self._range(self._members)]
        return [member for member in found if member is not None]

    async def leave(self) -> bool:
        """Drop this instance's membership at once (a clean stop); True if it was ours."""
        lease = self._lease
        if lease is None:
            return False
        name = _b64(self._members + self.me.id)
        reply = await self._call(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": name, "target": "LEASE", "result": "EQUAL", "lease": str(lease)}
                ],
                "success": [{"request_delete_range": {"key": name}}],
            },
            "leave",
        )
        await self._revoke(lease, "leave")
        self._lease = None
        return bool(reply.get("succeeded"))

    # owners ------------------------------------------------------------------------------

    async def record_owner(self, symbol: str, state: str, fence: int, since: float) -> Recorded:
        """Record this instance as ``symbol``'s owner (``held`` for ``ttl``, or
        ``released``), unless a newer owner is recorded, or another instance is and one of
        the two databases is not shared; the previous record."""
        if state not in ("held", "released"):
            raise ValueError(f"an ownership record is held or released, not {state!r}")
        for _ in range(_WRITE_ATTEMPTS):
            record_kv, held_kv = await self._read_owner(symbol)
            now = time.time()
            previous = await self._previous(record_kv, held_kv, now)
            refusal = record_refusal(previous, self.me, state, fence)
            if refusal:
                return Recorded(False, previous, now, other_database=refusal == 2)
            if await self._write_owner(symbol, state, fence, since, record_kv):
                return Recorded(True, previous, now)
        raise LockError(f"fleet record of {symbol}: changed by others {_WRITE_ATTEMPTS} times")

    async def _read_owner(self, symbol: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        reply = await self._call(
            "/v3/kv/txn",
            {
                "success": [
                    {"request_range": {"key": _b64(self._owners + symbol)}},
                    {"request_range": {"key": _b64(self._held + symbol)}},
                ]
            },
            "read",
        )
        found = parsed(
            lambda: [(r["response_range"].get("kvs") or [None])[0] for r in reply["responses"]]
        )
        return found[0], found[1]

    async def _previous(
        self, record_kv: dict[str, Any] | None, held_kv: dict[str, Any] | None, now: float
    ) -> OwnerRecord | None:
        record = _readable(record_kv)
        if record is None or record.state != "held":
            return record
        left = None if held_kv is None else await self._left(int(held_kv.get("lease", 0)))
        return replace(record, until=now + (left or 0.0))

    async def _write_owner(
        self, symbol: str, state: str, fence: int, since: float, record_kv: dict[str, Any] | None
    ) -> bool:
        name, held = _b64(self._owners + symbol), _b64(self._held + symbol)
        value = {
            "owner": self.me.id,
            "state": state,
            "fence": fence,
            "since": since,
            "shared": self.me.shared_database,
            "database": self.me.database or "",
        }
        ops: list[dict[str, Any]] = [
            {"request_put": {"key": name, "value": _b64(json.dumps(value))}}
        ]
        replaced: int | None = None
        if state == "held":
            lease, replaced = await self._held_lease(symbol, fence)
            ops.append(
                {"request_put": {"key": held, "value": _b64(str(fence)), "lease": str(lease)}}
            )
        else:
            ops.append({"request_delete_range": {"key": held}})
        compare = _absent(name) if record_kv is None else _unchanged(name, record_kv)
        reply = await self._call("/v3/kv/txn", {"compare": [compare], "success": ops}, "record")
        if not reply.get("succeeded"):
            return False
        if state == "released":
            replaced = self._held_leases.pop(symbol, (0, None))[1]
        if replaced is not None:
            await self._revoke(replaced, "record")
        return True

    async def _held_lease(self, symbol: str, fence: int) -> tuple[int, int | None]:
        """The lease of ``symbol``'s held key for this fence, kept alive or granted; and a
        former lease it replaces (to revoke once the record no longer uses it)."""
        current = self._held_leases.get(symbol)
        if current is not None and current[0] == fence and await self._alive(current[1], "record"):
            return current[1], None
        lease = await self._grant("record")
        self._held_leases[symbol] = (fence, lease)
        return lease, None if current is None else current[1]

    @property
    def owners_key(self) -> str:
        """The prefix of the ownership records (for the operator: ``etcdctl del`` a
        record, ``<prefix><symbol>``)."""
        return self._owners

    def forget_command(self, symbol: str) -> str:
        """How an operator deletes ``symbol``'s ownership record: ``etcdctl del``."""
        return f"etcdctl del '{self._owners}{symbol}'"

    async def owner(self, symbol: str) -> OwnerRecord | None:
        """The ownership record of one symbol, if there is a readable one."""
        record_kv, held_kv = await self._read_owner(symbol)
        return await self._previous(record_kv, held_kv, time.time())

    async def owners(self) -> dict[str, OwnerRecord]:
        """The ownership record of every symbol the fleet has traded (readable ones)."""
        records, held = await asyncio.gather(self._range(self._owners), self._range(self._held))
        now = time.time()
        held_by = {_text(kv["key"])[len(self._held) :]: kv for kv in held}
        found: dict[str, OwnerRecord] = {}
        for kv in records:
            symbol = _text(kv["key"])[len(self._owners) :]
            record = await self._previous(kv, held_by.get(symbol), now)
            if record is not None:
                found[symbol] = record
        return found

    async def _range(self, prefix: str) -> list[dict[str, Any]]:
        reply = await self._call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix)}, "read"
        )
        return parsed(lambda: list(reply.get("kvs", [])))


def _value(kv: dict[str, Any]) -> str:
    return _text(kv["value"])


def _absent(name: str) -> dict[str, Any]:
    return {"key": name, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def _unchanged(name: str, kv: dict[str, Any]) -> dict[str, Any]:
    return {"key": name, "target": "MOD", "result": "EQUAL", "mod_revision": kv["mod_revision"]}


def _refused(reply: dict[str, Any]) -> dict[str, Any] | None:
    """The other entry a heartbeat's transaction read; None when it registered."""
    if reply.get("succeeded"):
        return None
    inner = reply["responses"][0]["response_txn"]
    if inner.get("succeeded"):
        return None
    kv: dict[str, Any] = inner["responses"][0]["response_range"]["kvs"][0]
    return kv


def _entry(kv: dict[str, Any]) -> tuple[Any, int]:
    """A member entry's decoded JSON and its lease."""
    return json.loads(_text(kv["value"])), int(kv.get("lease", 0))


def _readable(kv: dict[str, Any] | None) -> OwnerRecord | None:
    """The record in ``kv``; ``None`` for none, or one this version cannot read."""
    if kv is None:
        return None
    try:
        data = json.loads(_text(kv["value"]))
        state: Literal["held", "released"] = data["state"]
        if state not in ("held", "released"):
            return None
        shared, database = data.get("shared"), data.get("database")
        return OwnerRecord(
            str(data["owner"]),
            state,
            int(data["fence"]),
            None,
            float(data.get("since", 0.0)),
            shared if isinstance(shared, bool) else None,
            database if isinstance(database, str) and database else None,
        )
    except (ValueError, KeyError, TypeError):
        return None
