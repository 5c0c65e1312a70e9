"""The etcd lock: one etcd lease per acquisition, a create-if-absent transaction, fences
from the key's create revision.

Client. etcd's v3 JSON gateway (``/v3/lease/grant``, ``/v3/kv/txn``, ...) over aiohttp,
not the ``aetcd`` gRPC client. aetcd 1.0 speaks etcd 3.4 correctly, but it dials one
``host:port`` (a three-member cluster that loses that member loses the client), ships
no type information (this package is checked with ``mypy --strict``), has one integer
timeout for every call, cannot compare a key's lease, raises a bare ``ClientError`` for
"lease not found", and brings grpcio, whose reconnect backoff kept a restarted etcd
unused for seconds after it was back. The gateway costs one JSON hop inside etcd (about
0.5 ms per cycle of three requests on loopback, measured with both clients); in return
the endpoints, timeouts, retries and errors are ours.

Acquire: grant a lease of ``ceil(ttl)`` seconds (etcd counts leases in whole seconds and
may grant more than asked, never less), then one transaction: if the key's create
revision is 0 (absent), put the token under the lease; else read the key. A key holding
our own token (a request repeated after a lost reply) is ours. Otherwise the key is held
elsewhere and the unused lease is revoked. Release revokes the lease, which deletes the
key with it; a lease already gone (expired, or the key taken over after that) releases
nothing. Extend re-arms the lease with a keep-alive and then reads the key: still ours,
under this lease, with this fence, or the lease is lost.

Tokens are ``<lease id in hex>:<random 96-bit prefix per locker>.<counter>``: unique per
acquisition, and naming the lease to revoke or keep alive.

Fences. The key's create revision: etcd's revision counter is one per cluster, advanced
by every write, replicated and fsynced before an answer, so the fences of every key (not
only of one symbol) are one strictly increasing sequence, across holders, restarts and
member losses. Only a cluster rebuilt empty, or restored from an older snapshot, would
hand out lower revisions again.

Deadlines. A lease's deadline is ``time before the grant (or keep-alive) was sent +
ttl - drift``, ``drift = ttl * drift_factor + min_drift``: etcd's leader starts the
lease's time when it applies the request, after it was sent, so the holder gives the
lease up before etcd can revoke it. A lease's TTL is fixed at its grant: ``extend`` with
a longer ``ttl`` renews it for its granted TTL only, and the deadline says so. (The
renewal watchdog and the ownership leases always extend with the TTL they took.)

Requests. Every request the lock sends is safe to repeat, so one that could not be
delivered to a member (refused, reset) goes to the next member at once, each member at
most once per call (a lone member twice: its pooled connection may be one it closed
when it restarted). A request that timed out is not repeated (the member may be
partitioned or stalled): it fails with ``LockUnavailable``, and the next call starts at
the next member. A member without a quorum cannot grant or renew anything: its requests
time out or fail, and the lock fails closed.

Cancellation. As in the Redis lock: an acquire cancelled (or failed) after its lease was
granted revokes the lease in the background, which deletes the key if the transaction
had created it; a cancelled release is retried in the background; a cancelled extend
leaves the old lease valid until its old deadline. The TTL bounds whatever a background
revoke cannot reach.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import structlog

from quantmesh.errors import LockError, LockUnavailable
from quantmesh.lock.base import Lease, wait_lock
from quantmesh.lock.cleanup import Cleanups
from quantmesh.lock.health import LockHealth
from quantmesh.lock.renewal import RenewedLease, renewed

if TYPE_CHECKING:
    import ssl

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "quantmesh:lock:"
_NAME_CACHE = 10_000  # keys whose encoded names are kept; levels of every symbol fit
_JSON = {"Content-Type": "application/json"}

# gRPC status codes the gateway passes on that mean "cannot serve this right now":
# DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (no space, too many requests), UNAVAILABLE (no
# leader, leader changed, request timed out).
_UNAVAILABLE_CODES = frozenset({4, 8, 14})
_NOT_FOUND = 5
_UNAUTHENTICATED = 16  # a token etcd no longer knows (expired, or a restarted member's)
# The TLS alerts of a member that refused our client certificate, or its absence.
_REFUSED_CERTIFICATE = re.compile(
    r"\[SSL: (\w*ALERT_(?:BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA))\]"
)

_T = TypeVar("_T")


class EtcdNotFound(LockError):
    """The lease asked for does not exist (expired or revoked)."""


class _Unauthenticated(LockError):
    """etcd refused the request's auth token (expired): authenticate again."""


class EtcdClient(Protocol):
    """What the lock needs of etcd: one JSON request to the v3 gateway."""

    async def call(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """POST ``body`` to ``path``; the decoded reply. Raises ``LockUnavailable`` when
        no member answers, ``EtcdNotFound`` for a missing lease, ``LockError`` otherwise."""
        ...

    async def close(self) -> None: ...


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError("an etcd endpoint is http(s)://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError("an etcd endpoint carries no user or password")
    return f"{parts.scheme}://{parts.netloc}"


class EtcdGateway:
    """etcd's v3 JSON gateway on one or more members, over one aiohttp session.

    ``request_timeout`` bounds the wait for each reply, ``connect_timeout`` each new
    connection; ``pool_size`` connections are kept per member, and a request beyond them
    waits up to ``pool_timeout`` for a free one. The session is made by the first
    request, in the running loop.

    With ``username`` (etcd's authentication enabled) the first request authenticates
    (``/v3/auth/authenticate``) and every request carries the token; a token etcd no
    longer accepts is replaced once per request. The password is sent to etcd only, and
    never appears in an error.

    ``ssl_context`` is the TLS of ``https://`` endpoints (its CA, its client certificate;
    ``coordination.servers.etcd_tls`` builds it from the settings); without it, the
    system's trust store and no client certificate. A handshake a member refuses fails the
    call like a member that cannot be reached, with what to set in its message.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout: float = 1.0,
        connect_timeout: float = 1.0,
        pool_size: int = 100,
        pool_timeout: float = 5.0,
        username: str | None = None,
        password: str = "",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = [_endpoint(e) for e in endpoints]
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=pool_timeout + connect_timeout,
            sock_connect=connect_timeout,
            sock_read=request_timeout,
        )
        self._pool_size = pool_size
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._at = 0  # the member tried first
        self._credentials = None if not username else {"name": username, "password": password}
        self._token: str | None = None
        self._authenticating = asyncio.Lock()

    def _open(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self._pool_size, ssl=self._ssl or True
            )
            session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
            self._session = session
        return session

    def _next(self, start: int) -> None:
        """The member at ``start`` failed: the next call starts at the one after it."""
        if self._at == start:
            self._at = (start + 1) % len(self.endpoints)

    async def call(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        if self._credentials is None:
            return await self._send(path, body, what, _JSON)
        token = self._token
        try:
            return await self._send(path, body, what, await self._headers(token))
        except _Unauthenticated:
            self._forget(token)
            return await self._send(path, body, what, await self._headers(None))

    async def _headers(self, token: str | None) -> dict[str, str]:
        """The headers of an authenticated request: a fresh token unless ``token``."""
        if token is None:
            async with self._authenticating:  # one authentication for concurrent requests
                if self._token is None:
                    assert self._credentials is not None
                    reply = await self._send(
                        "/v3/auth/authenticate", self._credentials, "authentication", _JSON
                    )
                    self._token = parsed(lambda: str(reply["token"]))
                token = self._token
        return {**_JSON, "Authorization": token}

    def _forget(self, token: str | None) -> None:
        if self._token == token:
            self._token = None

    async def _send(
        self, path: str, body: dict[str, Any], what: str, headers: dict[str, str]
    ) -> dict[str, Any]:
        session = self._open()
        data = json.dumps(body, separators=(",", ":")).encode()
        first = self._at
        error: BaseException | None = None
        # Each member once; a lone member twice (a pooled connection it closed: a restart).
        for n in range(max(len(self.endpoints), 2)):
            at = (first + n) % len(self.endpoints)
            try:
                async with session.post(self.endpoints[at] + path, data=data, headers=headers) as r:
                    status, raw = r.status, await r.read()
            except TimeoutError as exc:  # not repeated: the member may be stalled
                self._next(at)
                raise self._down(what, exc) from None
            except aiohttp.ClientConnectionError as exc:  # not delivered: the next member
                self._next(at)
                error = exc
                continue
            except aiohttp.ClientError as exc:
                raise LockError(f"etcd {what} failed: {type(exc).__name__}: {exc}") from None
            return self._reply(status, raw, what, at)
        assert error is not None
        raise self._down(what, error) from None

    @staticmethod
    def _down(what: str, exc: BaseException) -> LockUnavailable:
        problem = _tls_problem(exc)
        if problem is not None:
            return LockUnavailable(f"etcd {what} failed: TLS: {problem}")
        return LockUnavailable(f"etcd {what} failed: {type(exc).__name__}: {exc}".rstrip(": "))

    def _reply(self, status: int, raw: bytes, what: str, at: int) -> dict[str, Any]:
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if status == 200 and isinstance(reply, dict) and not reply.get("error"):
            return reply
        # An error reply; a streamed one (keep-alive) reports its error inside a 200.
        error: Any = reply if status != 200 else None
        if isinstance(reply, dict) and status == 200:
            error = reply.get("error")
        if not isinstance(error, dict):
            error = {}
        code = error.get("code", error.get("grpc_code"))
        detail = error.get("message") or raw[:200].decode(errors="replace")
        message = f"etcd {what} failed: HTTP {status}: {detail}"
        if "user name is empty" in str(detail):  # etcd's authentication is on
            message += " (etcd has authentication enabled: set etcd.username and etcd.password)"
        if code == _NOT_FOUND:
            raise EtcdNotFound(message)
        if code == _UNAUTHENTICATED:
            raise _Unauthenticated(message)
        if code in _UNAVAILABLE_CODES or (code is None and status >= 500):
            self._next(at)  # no leader, no space: another member may do better
            raise LockUnavailable(message)
        raise LockError(message)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _tls_problem(exc: BaseException) -> str | None:
    """What a failed TLS handshake with a member means, and what to set; None when ``exc``
    is not one."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        detail = getattr(cause, "verify_message", None) or str(cause)
        return (
            f"the member's certificate cannot be verified ({detail}): set etcd.ca_file to "
            "the CA that signed the members' certificates"
        )
    alert = _REFUSED_CERTIFICATE.search(str(exc))
    if alert is not None:
        return (
            f"the member refused the client certificate, or its absence ({alert[1]}): etcd "
            "runs with --client-cert-auth; set etcd.cert_file and etcd.key_file to a "
            "certificate signed by the CA it trusts (its --trusted-ca-file)"
        )
    return None


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def _lease_id(token: str) -> int | None:
    head, sep, _ = token.partition(":")
    if not sep:
        return None
    try:
        return int(head, 16)
    except ValueError:
        return None


def _seconds(ttl: float) -> int:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"lock ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, math.ceil(ttl))


class EtcdLock:
    """Fenced leases on etcd (one member or a cluster), through ``client``."""

    def __init__(
        self,
        client: EtcdClient,
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
        self._token_prefix = secrets.token_hex(12) + "."
        self._tokens = itertools.count(1)
        self._names: dict[str, str] = {}  # key -> its etcd name, base64
        self._reason = ""  # why the last health check failed; empty while healthy

    def _name(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _NAME_CACHE:
                self._names.clear()
            name = self._names[key] = _b64(self.prefix + key)
        return name

    def _deadline(self, start: float, ttl: float) -> float:
        return start + ttl - (ttl * self._drift_factor + self._min_drift)

    # the lock ----------------------------------------------------------------------------

    async def try_lock(self, key: str, ttl: float) -> Lease | None:
        seconds = _seconds(ttl)
        name = self._name(key)
        start = self._clock()
        # Cancelled or failed here, a lease may exist without a key: its TTL ends it.
        grant = await self.client.call("/v3/lease/grant", {"TTL": seconds}, "lease grant")
        lease_id, granted = parsed(lambda: (int(grant["ID"]), int(grant.get("TTL", 0))))
        token = f"{lease_id:x}:{self._token_prefix}{next(self._tokens):x}"
        value = _b64(token)
        try:
            reply = await self.client.call(
                "/v3/kv/txn",
                {
                    "compare": [
                        {"key": name, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                    ],
                    "success": [
                        {"request_put": {"key": name, "value": value, "lease": str(lease_id)}}
                    ],
                    "failure": [{"request_range": {"key": name}}],
                },
                "acquire",
            )
            fence = parsed(lambda: _acquired(reply, value))
        except BaseException:  # cancelled or failed: the transaction may have run
            self._revoke_later(lease_id)
            raise
        if fence is None:
            self._revoke_later(lease_id)  # held elsewhere: the lease has no key
            return None
        return Lease(key, token, fence, self._deadline(start, min(ttl, granted)))

    async def lock(self, key: str, ttl: float, timeout: float) -> Lease:
        return await wait_lock(self.try_lock, key, ttl, timeout, clock=self._clock)

    def renewed(
        self, key: str, ttl: float, timeout: float = 0.0
    ) -> AbstractAsyncContextManager[RenewedLease]:
        """``async with locker.renewed(key, ttl)``: a lease renewed by a watchdog, always released."""
        return renewed(self, key, ttl, timeout, clock=self._clock)

    async def unlock(self, lease: Lease) -> bool:
        lease_id = _lease_id(lease.token)
        if lease_id is None:
            return False  # not a token of this lock
        try:
            return await self._revoke(lease_id)
        except BaseException:  # cancelled or failed: revoking again is harmless
            self._revoke_later(lease_id)
            raise

    async def extend(self, lease: Lease, ttl: float) -> Lease | None:
        _seconds(ttl)  # checked; the lease keeps the TTL it was granted with
        lease_id = _lease_id(lease.token)
        if lease_id is None:
            return None  # not a token of this lock
        start = self._clock()
        alive = await self.client.call("/v3/lease/keepalive", {"ID": str(lease_id)}, "extend")
        granted = parsed(lambda: int(alive.get("result", {}).get("TTL", 0)))
        if granted <= 0:
            return None  # the lease expired or was revoked
        found = await self.client.call("/v3/kv/range", {"key": self._name(lease.key)}, "extend")
        if not parsed(lambda: _holds(found, _b64(lease.token), lease_id, lease.fence)):
            self._revoke_later(lease_id)  # the key was taken over: the lease holds nothing
            return None
        return lease._replace(deadline=self._deadline(start, min(ttl, granted)))

    # health ------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Health check: raises ``LockError`` unless a quorum of etcd takes a write."""
        try:
            # A write, not a read or /health: only a member with a quorum behind it,
            # and room in its database, can grant leases.
            await self.client.call(
                "/v3/kv/put",
                {"key": _b64(f"{self.prefix}{{health}}:probe"), "value": _b64("1")},
                "health check",
            )
        except LockError as exc:
            self._reason = str(exc)
            raise
        self._reason = ""

    async def start(self) -> None:
        """Check etcd once; the service starts halted when etcd cannot be reached."""
        with contextlib.suppress(LockError):
            await self.ping()

    def health(self) -> LockHealth:
        """``halted`` while the last health check failed, with its reason."""
        if self._reason:
            return LockHealth(backend="etcd", mode="halted", reason=self._reason)
        return LockHealth(backend="etcd", mode="distributed")

    # background revokes --------------------------------------------------------------

    async def _revoke(self, lease_id: int) -> bool:
        try:
            await self.client.call("/v3/lease/revoke", {"ID": str(lease_id)}, "release")
        except EtcdNotFound:
            return False
        return True

    def _revoke_later(self, lease_id: int) -> None:
        """Revoke ``lease_id`` (and the key under it) in the background, best effort."""
        self._cleanups.spawn(self._revoke_quietly(lease_id))

    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            await self._revoke(lease_id)
        except LockError as exc:  # the lease's TTL bounds it
            log.debug("lock_cleanup_failed", lease=f"{lease_id:x}", error=str(exc))

    async def settle(self) -> None:
        """Wait for background revokes (tests; ``close`` does it too)."""
        await self._cleanups.settle()

    async def close(self) -> None:
        await self._cleanups.close()
        await self.client.close()


def parsed(read: Callable[[], _T]) -> _T:
    """``read()`` of a reply, or ``LockError`` when the reply is not what etcd sends."""
    try:
        return read()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise LockError(f"etcd sent an unexpected reply: {type(exc).__name__}: {exc}") from None


def _holds(reply: dict[str, Any], value: str, lease_id: int, fence: int) -> bool:
    """Whether a range reply shows the key holding ``value`` under ``lease_id``, created
    at ``fence``."""
    kvs = reply.get("kvs") or [{}]
    kv = kvs[0]
    return (
        kv.get("value") == value
        and int(kv.get("lease", 0)) == lease_id
        and int(kv.get("create_revision", 0)) == fence
    )


def _acquired(reply: dict[str, Any], value: str) -> int | None:
    """The fence of an acquire transaction's reply; ``None`` when the key is another's."""
    if reply.get("succeeded"):
        return int(reply["header"]["revision"])
    for response in reply.get("responses", ()):
        for kv in response.get("response_range", {}).get("kvs", ()):
            if kv.get("value") == value:  # ours: a repeated request after a lost reply
                return int(kv["create_revision"])
    return None
