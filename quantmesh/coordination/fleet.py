"""The fleet in Redis: membership heartbeats and the record of who owns which symbol.

Keys, under the lock prefix with one Redis Cluster hash tag per exchange
(``quantmesh:lock:{fleet:binance}:...``):

- ``members``: a sorted set of instance ids scored by when their heartbeat lapses
  (Redis server time, ms);
- ``info``: a hash of id -> JSON (token, role, symbols, host, pid, database kind and
  whether it is shared);
- ``owners``: a hash of symbol -> JSON (owner, state ``held`` or ``released``, fence,
  since, the owner's database kind and whether it is shared).

A heartbeat re-arms ``members`` and ``info``; lapsed entries are swept by every
heartbeat. Every process draws a random token at start. A heartbeat for an id whose
entry holds another token that has not lapsed is refused: two live instances with one id.

An ``owners`` record is written by the holder of the symbol's ownership lease when it
takes the symbol and when it hands it back; the lease itself, not this record, decides
who trades. The record is also the memory of where a symbol's grid lives: a symbol never
moves to another instance when either database is not shared (the new owner would start
an empty grid beside the old one's open orders).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from quantmesh.coordination.allocation import Member
from quantmesh.coordination.membership import (
    OwnerRecord,
    Recorded,
    Registration,
    entry_of,
    member_of_entry,
)
from quantmesh.lock.redis import RedisClient, lock_error

# A database kind goes into a JSON string written by Lua: letters, digits and _ only.
_KIND = re.compile(r"[^A-Za-z0-9_]")

# KEYS[1] members, KEYS[2] info; ARGV[1] id, ARGV[2] token, ARGV[3] ttl ms, ARGV[4] info.
# Returns {1} when registered, else {0, the other entry's info, its ms left}.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(lapsed) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current and cjson.decode(current)['token'] ~= ARGV[2] then
  local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if until_ms then
    return {0, current, string.format('%d', tonumber(until_ms) - now)}
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
return {1}
"""
# KEYS[1] members, KEYS[2] info: the info of every member whose heartbeat has not lapsed.
_MEMBERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""
# KEYS[1] members, KEYS[2] info; ARGV[1] id, ARGV[2] token: leave if the entry is ours.
_LEAVE = """
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current and cjson.decode(current)['token'] == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
# KEYS[1] owners; ARGV[1] symbol, ARGV[2] owner, ARGV[3] state, ARGV[4] fence (digits),
# ARGV[5] ttl ms, ARGV[6] since, ARGV[7] "true"/"false": the owner's database is shared,
# ARGV[8] its kind. Stores the record unless one with a newer fence is stored (a former
# owner cannot overwrite its successor), this lease was already recorded as released (a
# late refresh), or another instance is recorded and the symbol cannot move between the
# two databases (either is not shared); "until" is when a held lease ends at the latest,
# on the server's clock. Returns {1 stored | 0 refused | 2 refused: another database,
# the previous record, now ms}.
_RECORD_OWNER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local previous = redis.call('HGET', KEYS[1], ARGV[1])
local readable, stored = pcall(cjson.decode, previous or '')
if previous and readable and type(stored) == 'table' then
  local older = tonumber(stored['fence']) > tonumber(ARGV[4])
  local late = tonumber(stored['fence']) == tonumber(ARGV[4]) and stored['state'] == 'released'
  if older or (late and ARGV[3] == 'held') then
    return {0, previous, string.format('%d', now)}
  end
  if ARGV[3] == 'held' and stored['owner'] ~= ARGV[2]
      and (ARGV[7] ~= 'true' or stored['shared'] == false) then
    return {2, previous, string.format('%d', now)}
  end
end
local until_ms = now
if ARGV[3] == 'held' then until_ms = now + tonumber(ARGV[5]) end
redis.call('HSET', KEYS[1], ARGV[1], string.format(
  '{"owner":"%s","state":"%s","fence":%s,"until":%d,"since":%s,"shared":%s,"database":"%s"}',
  ARGV[2], ARGV[3], ARGV[4], until_ms, ARGV[6], ARGV[7], ARGV[8]))
return {1, previous or false, string.format('%d', now)}
"""


class Fleet:
    """Membership and ownership records of one exchange's fleet."""

    def __init__(
        self, client: RedisClient, *, prefix: str, exchange: str, me: Member, ttl: float
    ) -> None:
        self._client = client
        base = f"{prefix}{{fleet:{exchange}}}"
        self._members_key = f"{base}:members"
        self._info_key = f"{base}:info"
        self._owners_key = f"{base}:owners"
        self.me = me
        self.ttl = ttl
        self.token = secrets.token_hex(12)
        self._host = socket.gethostname()

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await self._client.execute_command("EVAL", script, len(keys), *keys, *args)
        except RedisError as exc:
            raise lock_error(exc, "fleet") from None

    async def heartbeat(self, symbols: frozenset[str] | None = None) -> Registration:
        """Register or renew this instance's membership for ``ttl`` seconds, claiming
        ``symbols`` (default: all it is configured with)."""
        info = entry_of(self.me, self.token, self._host, symbols)
        answer = await self._eval(
            _HEARTBEAT,
            (self._members_key, self._info_key),
            (self.me.id, self.token, max(1, round(self.ttl * 1000)), json.dumps(info)),
        )
        if int(answer[0]) == 1:
            return Registration(True)
        other = json.loads(_text(answer[1]))
        return Registration(False, other, int(_text(answer[2])) / 1000)

    async def members(self) -> list[Member]:
        """Every member whose heartbeat has not lapsed (this one included, if registered)."""
        infos = await self._eval(_MEMBERS, (self._members_key, self._info_key), ())
        entries = [member_of_entry(raw, _text) for raw in infos if raw is not None]
        return [member for member in entries if member is not None]

    async def leave(self) -> bool:
        """Drop this instance's membership at once (a clean stop); True if it was ours."""
        answer = await self._eval(
            _LEAVE, (self._members_key, self._info_key), (self.me.id, self.token)
        )
        return bool(answer)

    async def record_owner(self, symbol: str, state: str, fence: int, since: float) -> Recorded:
        """Record this instance as ``symbol``'s owner (``held`` until ``ttl`` from now, or
        ``released``), unless a newer owner is recorded, or another instance is and one of
        the two databases is not shared; the previous record."""
        answer = await self._eval(
            _RECORD_OWNER,
            (self._owners_key,),
            (
                symbol,
                self.me.id,
                state,
                str(fence),
                max(1, round(self.ttl * 1000)),
                repr(since),
                "true" if self.me.shared_database else "false",
                _KIND.sub("", self.me.database or ""),
            ),
        )
        # an unreadable previous record reads as none: the former owner is unknown
        previous = _readable(answer[1])
        code = int(answer[0])
        now = int(_text(answer[2])) / 1000
        return Recorded(code == 1, previous, now, other_database=code == 2)

    @property
    def owners_key(self) -> str:
        """The Redis hash of ownership records (for the operator: ``HDEL`` a record)."""
        return self._owners_key

    def forget_command(self, symbol: str) -> str:
        """How an operator deletes ``symbol``'s ownership record: ``redis-cli HDEL``."""
        return f"redis-cli HDEL '{self._owners_key}' {symbol}"

    async def _command(self, *args: str) -> Any:
        try:
            return await self._client.execute_command(*args)
        except RedisError as exc:
            raise lock_error(exc, "fleet") from None

    async def owner(self, symbol: str) -> OwnerRecord | None:
        """The ownership record of one symbol, if there is a readable one."""
        return _readable(await self._command("HGET", self._owners_key, symbol))

    async def owners(self) -> dict[str, OwnerRecord]:
        """The ownership record of every symbol the fleet has traded (readable ones)."""
        raw = await self._command("HGETALL", self._owners_key)
        items = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        records = {_text(key): _readable(value) for key, value in items}
        return {symbol: record for symbol, record in records.items() if record is not None}


def _readable(raw: bytes | str | None) -> OwnerRecord | None:
    """The record in ``raw``; ``None`` for none, or one this version cannot read."""
    if not raw:
        return None
    try:
        return _owner_record(raw)
    except (ValueError, KeyError, TypeError):
        return None


def _owner_record(raw: bytes | str) -> OwnerRecord:
    data = json.loads(_text(raw))
    until = data.get("until")
    shared = data.get("shared")
    database = data.get("database")
    return OwnerRecord(
        data["owner"],
        data["state"],
        int(data["fence"]),
        None if until is None else int(until) / 1000,
        float(data.get("since", 0.0)),
        shared if isinstance(shared, bool) else None,
        database if isinstance(database, str) and database else None,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
