"""The Redis lock: ``SET NX PX`` with a unique token, a fence, Lua compare-and-act.

Tokens are a random 96-bit prefix per locker plus a counter: unique to each acquisition
in every process, and cheaper than drawing 128 random bits per call.

Acquire is one Lua script: it sets the key only if free (or already ours: a retried
request after a lost reply), then advances the fence counter and returns the new fence;
0 means the key is held elsewhere. Release and extend compare the token before they
delete or re-arm the key, so only the holder can do either.

Fences. One counter per lock *tag*: the part of the key in braces, which ``LockKeys``
sets to the per-symbol key (``{order:binance:ETHUSDT}:17``). Every level of a symbol
draws from that symbol's counter, so the fences of all its levels are one strictly
increasing sequence and the lock key and its counter share a Redis Cluster hash slot.
The counter advances to ``max(counter + 1, server time in microseconds)``: if Redis
loses the counter (a restart without persistence, a failover to a replica that missed
the last writes), fences still do not go back, as long as the server clock does not.
Fences are comparable between leases of the same symbol; across symbols they mean
nothing.

Deadlines. A lease's deadline is ``time before the request + ttl - drift``, with
``drift = ttl * drift_factor + min_drift`` for clock rate differences between this host
and Redis: the lease is given up before Redis can expire the key, never after.

Cancellation. An acquire cancelled (or failed) after its request left may have set the
key; a background release with the same token deletes it if so, and the key's TTL bounds
it anyway. A cancelled release is retried in the background the same way (it is
idempotent: it deletes only the key still holding this token). A cancelled extend leaves
the old lease valid until its old deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quantmesh.errors import LockError, LockUnavailable
from quantmesh.lock.base import Lease, wait_lock
from quantmesh.lock.cleanup import Cleanups
from quantmesh.lock.renewal import RenewedLease, renewed

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "quantmesh:lock:"
_NAME_CACHE = 10_000  # keys whose Redis names are kept; levels of every symbol fit

# KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] token, ARGV[2] ttl in ms.
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
if now > fence then fence = now end
redis.call('SET', KEYS[2], string.format('%d', fence))
return fence
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Errors that say "Redis cannot be reached or cannot serve writes right now".
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError,
                ReadOnlyError, OSError)  # fmt: skip


class RedisClient(Protocol):
    """The part of ``redis.asyncio.Redis`` / ``RedisCluster`` the lock uses."""

    async def execute_command(self, *args: Any, **options: Any) -> Any: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> _Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())  # Redis names scripts by SHA1


ACQUIRE = _Script.of(_ACQUIRE)
RELEASE = _Script.of(_RELEASE)
EXTEND = _Script.of(_EXTEND)


def tag_of(key: str) -> str:
    """The hash tag of ``key`` with its braces (``{order:x:ETHUSDT}``), or the key itself."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start : end + 1]
    return key


def lock_error(exc: BaseException, what: str) -> LockError:
    """A redis-py error as ours: unreachable vs. anything else. Never carries secrets."""
    message = f"redis {what} failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, _UNAVAILABLE):
        return LockUnavailable(message)
    return LockError(message)


class RedisLock:
    """Fenced leases on Redis (standalone, Sentinel master or Cluster)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = DEFAULT_PREFIX,
        drift_factor: float = 0.01,
        min_drift: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._drift_factor = drift_factor
        self._min_drift = min_drift
        self._clock = clock
        self._cleanups = Cleanups()
        # Tokens: a random prefix per locker and a counter, unique across processes.
        self._token_prefix = secrets.token_hex(12) + "."
        self._tokens = itertools.count(1)
        self._names: dict[str, tuple[str, str]] = {}  # key -> (lock key, fence key)

    def _keys(self, key: str) -> tuple[str, str]:
        names = self._names.get(key)
        if names is None:
            if len(self._names) >= _NAME_CACHE:
                self._names.clear()
            names = (self.prefix + key, f"{self.prefix}{tag_of(key)}:fence")
            self._names[key] = names
        return names

    def _deadline(self, start: float, ttl: float) -> float:
        return start + ttl - (ttl * self._drift_factor + self._min_drift)

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # first use on this server (or after a restart / failover)
            return await self.client.execute_command("EVAL", script.source, len(keys), *keys, *args)

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        name, fence_key = self._keys(key)
        token = f"{self._token_prefix}{next(self._tokens):x}"
        ms = _ms(ttl)
        start = self._clock()
        try:
            try:  # _eval inlined: this is the hot path
                fence = await self.client.execute_command(
                    "EVALSHA", ACQUIRE.sha, 2, name, fence_key, token, ms
                )
            except NoScriptError:
                fence = await self._eval(ACQUIRE, (name, fence_key), (token, ms))
        except asyncio.CancelledError:
            self._release_later(name, token)
            raise
        except RedisError as exc:
            self._release_later(name, token)
            raise lock_error(exc, "acquire") from None
        if not fence:
            return None
        return Lease(key, token, int(fence), self._deadline(start, ttl))

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        return await wait_lock(self.try_lock, key, ttl, timeout, clock=self._clock)

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        """``async with locker.renewed(key, ttl)``: a lease renewed by a watchdog, always released."""
        return renewed(self, key, ttl, timeout, clock=self._clock)

    async def unlock(self, lease: Lease) -> bool:
        name = self._keys(lease.key)[0]
        try:
            try:
                released = await self.client.execute_command(
                    "EVALSHA", RELEASE.sha, 1, name, lease.token
                )
            except NoScriptError:
                released = await self._eval(RELEASE, (name,), (lease.token,))
        except asyncio.CancelledError:
            self._release_later(name, lease.token)
            raise
        except RedisError as exc:
            self._release_later(name, lease.token)
            raise lock_error(exc, "release") from None
        return bool(released)

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        start = self._clock()
        try:
            renewed = await self._eval(EXTEND, (self.prefix + lease.key,), (lease.token, _ms(ttl)))
        except RedisError as exc:
            raise lock_error(exc, "extend") from None
        if not renewed:
            return None
        return lease._replace(deadline=self._deadline(start, ttl))

    async def ping(self) -> None:
        """Health check: raises ``LockError`` unless the server answers and takes writes."""
        try:
            # A write, not a PING: a demoted master (now a replica) answers PING but
            # cannot grant locks. The probe key expires by itself.
            await self.client.execute_command(
                "SET", f"{self.prefix}{{health}}:probe", "1", "PX", 10_000
            )
        except RedisError as exc:
            raise lock_error(exc, "health check") from None

    def _release_later(self, name: str, token: str) -> None:
        """Delete ``name`` if it still holds ``token``, in the background (best effort)."""
        self._cleanups.spawn(self._release_quietly(name, token))

    async def _release_quietly(self, name: str, token: str) -> None:
        try:
            await self._eval(RELEASE, (name,), (token,))
        except RedisError as exc:  # the key's TTL bounds it
            log.debug("lock_cleanup_failed", key=name, error=str(exc))

    async def settle(self) -> None:
        """Wait for background releases (tests; ``close`` does it too)."""
        await self._cleanups.settle()

    async def close(self) -> None:
        await self._cleanups.close()
        await self.client.aclose()


def _ms(ttl: float) -> int:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"lock ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, round(ttl * 1000))
