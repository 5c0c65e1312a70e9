"""Request expiry: order creates and cancels that the exchange refuses once their leases end.

A request may leave this process long after the lease check that allowed it (a frozen
process, a slow network). So each create and cancel sent with ``expires_at`` (a
``time.monotonic()`` value: the end of the leases it is sent under) carries a deadline on
the exchange's own clock, and the exchange refuses it past that deadline:

- Binance: the signed ``timestamp`` and ``recvWindow`` (at most 60 s);
- OKX: the ``expTime`` header on order placement (OKX has no expiry for cancels; they
  expire only with the 30 s ``OK-ACCESS-TIMESTAMP`` window);
- Bybit (v5): the signed ``X-BAPI-TIMESTAMP`` and ``X-BAPI-RECV-WINDOW`` headers.

The deadline is computed when ccxt signs the request (after its rate limiter):

    left = expires_at - now - uncertainty - drift_ppm * (now - measured) - margin

- ``uncertainty`` is half the round trip of the clock measurement;
- ``drift_ppm`` bounds how fast our monotonic clock and the exchange's may drift apart
  since that measurement;
- ``margin`` covers the rest (the exchange's millisecond resolution, servers behind one
  API disagreeing a little).

With less than ``minimum`` left the request is not sent (``RequestExpired``). Before the
exchange's clock has been measured, no request with an expiry is sent at all: an expiry
computed from an unknown offset cannot be trusted.

The exchange's clock is measured against the monotonic clock (so a wall clock step on
this host does not move the deadlines) and, for reports and for ccxt's own timestamps
(``options["timeDifference"]``), against the wall clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ccxt
import structlog

from quantmesh.domain import ClockOffset
from quantmesh.errors import RequestExpired

log = structlog.get_logger(__name__)

__all__ = [
    "ClockSample",
    "ExchangeClock",
    "ExpiryMargins",
    "RequestExpiry",
    "WireExpiry",
    "clock_sample",
    "expiry_mechanism",
    "expiry_refusal",
    "preferred",
    "wire_expiry",
]

_MEASURE_ERRORS = (ccxt.BaseError, OSError, TimeoutError, ValueError, TypeError)
Sign = Callable[[str, list[str], str, Any], dict[str, Any]]  # params: a dict (OKX: or a list)


# -- arithmetic ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiryMargins:
    """What is taken off a request's time left before it goes on the wire (seconds)."""

    margin: float = 0.020
    drift_ppm: float = 100.0  # rate difference allowed between our clock and the exchange's
    minimum: float = 0.050  # less than this left: not sent
    max_window: float = 60.0  # Binance refuses a recvWindow above 60 s


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One measurement of the exchange's clock (seconds)."""

    offset_wall: float  # exchange clock - this host's wall clock
    offset_mono: float  # exchange clock - this host's monotonic clock
    uncertainty: float  # half the round trip of the measurement
    measured_mono: float
    measured_wall: float

    def public(self) -> ClockOffset:
        return ClockOffset(self.offset_wall, self.uncertainty, self.measured_wall)

    def uncertainty_at(self, now_mono: float, drift_ppm: float) -> float:
        """How far the offset may be off at ``now_mono``: the measurement's own uncertainty
        plus the drift allowed since it was taken."""
        return self.uncertainty + drift_ppm * 1e-6 * abs(now_mono - self.measured_mono)


def clock_sample(
    server_ms: float, t0_wall: float, t1_wall: float, t0_mono: float, t1_mono: float
) -> ClockSample:
    """The exchange's clock from its time (``server_ms``) read between t0 and t1."""
    server = server_ms / 1000
    return ClockSample(
        offset_wall=server - (t0_wall + t1_wall) / 2,
        offset_mono=server - (t0_mono + t1_mono) / 2,
        uncertainty=max(0.0, (t1_mono - t0_mono) / 2),
        measured_mono=t1_mono,
        measured_wall=t1_wall,
    )


def preferred(
    current: ClockSample | None, new: ClockSample, now_mono: float, drift_ppm: float
) -> ClockSample:
    """The sample to use: the new one when it is at least as certain as the current one
    (with the drift since), or when the two disagree (the exchange's clock moved)."""
    if current is None:
        return new
    held = current.uncertainty_at(now_mono, drift_ppm)
    if new.uncertainty <= held:
        return new
    disagree = abs(new.offset_mono - current.offset_mono) > new.uncertainty + held
    return new if disagree else current


@dataclass(frozen=True, slots=True)
class WireExpiry:
    """A request's timestamp and deadline on the exchange's clock, in milliseconds."""

    stamp_ms: int
    deadline_ms: int

    @property
    def window_ms(self) -> int:
        return self.deadline_ms - self.stamp_ms


def time_left(expires_at: float, now_mono: float, margins: ExpiryMargins) -> float:
    """Seconds left to send without an exchange clock: only the fixed margin is taken."""
    return expires_at - now_mono - margins.margin


def wire_expiry(
    expires_at: float,
    now_mono: float,
    sample: ClockSample | None,
    margins: ExpiryMargins,
) -> WireExpiry:
    """The timestamp and deadline to send; ``RequestExpired`` when the exchange's clock is
    not known yet or less than ``margins.minimum`` is left."""
    if sample is None:
        raise RequestExpired("the exchange's clock is not measured yet: not sent")
    slack = sample.uncertainty_at(now_mono, margins.drift_ppm) + margins.margin
    left = min(expires_at - now_mono - slack, margins.max_window)
    if not left >= margins.minimum:  # also refuses NaN
        raise RequestExpired(
            f"{max(expires_at - now_mono, 0.0) * 1000:.0f} ms of lease left, "
            f"{slack * 1000:.0f} ms of it uncertain: not sent"
        )
    exchange_now = now_mono + sample.offset_mono
    stamp = math.floor(exchange_now * 1000)
    deadline = math.floor((exchange_now + left) * 1000)
    return WireExpiry(stamp, deadline)


# -- how each exchange carries it ---------------------------------------------------------

_Route = tuple[str, str]  # (HTTP method, ccxt path)
_Apply = Callable[[Any, Sign, str, list[str], str, Any, WireExpiry], dict[str, Any]]


def _binance(
    client: Any, sign: Sign, path: str, api: list[str], method: str, params: Any,
    wire: WireExpiry,
) -> dict[str, Any]:  # fmt: skip
    # ccxt's binance sign() lets request params override its own timestamp and recvWindow.
    if not isinstance(params, dict):
        raise RequestExpired(f"binance {method} {path}: unexpected parameters, not sent")
    params = {**params, "timestamp": wire.stamp_ms, "recvWindow": wire.window_ms}
    return sign(path, api, method, params)


def _okx(
    client: Any, sign: Sign, path: str, api: list[str], method: str, params: Any,
    wire: WireExpiry,
) -> dict[str, Any]:  # fmt: skip
    # ``expTime`` is not part of OKX's signature: added to the signed request's headers.
    request = sign(path, api, method, params)
    request["headers"] = {**(request.get("headers") or {}), "expTime": str(wire.deadline_ms)}
    return request


def _bybit(
    client: Any, sign: Sign, path: str, api: list[str], method: str, params: Any,
    wire: WireExpiry,
) -> dict[str, Any]:  # fmt: skip
    # ccxt's bybit sign() takes the timestamp from nonce() and the window from its options,
    # both signed: set for this one (synchronous) call, then restored.
    options = client.options
    saved = options.get("recvWindow")
    options["recvWindow"] = wire.window_ms
    client.nonce = lambda: wire.stamp_ms
    try:
        return sign(path, api, method, params)
    finally:
        del client.nonce
        options["recvWindow"] = saved


@dataclass(frozen=True, slots=True)
class _Mechanism:
    description: str
    apply: _Apply
    private: frozenset[str]  # ccxt api names whose requests are signed
    expiring: frozenset[_Route]  # order writes that carry the expiry
    exempt: frozenset[_Route] = frozenset()  # order writes that cannot carry one
    refusals: frozenset[str] = frozenset()  # error codes: refused as expired, not executed
    cancels: bool = True  # whether cancels carry the expiry


_MECHANISMS: dict[str, _Mechanism] = {
    "binance": _Mechanism(
        "timestamp + recvWindow",
        _binance,
        frozenset({"private"}),
        frozenset({("POST", "order"), ("DELETE", "order")}),
        refusals=frozenset({"-1021", "-5028"}),
    ),
    "okx": _Mechanism(
        "expTime (order placement only)",
        _okx,
        frozenset({"private"}),
        frozenset(
            {
                ("POST", "trade/order"),
                ("POST", "trade/batch-orders"),
                ("POST", "trade/amend-order"),
                ("POST", "trade/amend-batch-orders"),
            }
        ),
        exempt=frozenset({("POST", "trade/cancel-order"), ("POST", "trade/cancel-batch-orders")}),
        refusals=frozenset({"50102", "50036", "50037"}),
        cancels=False,
    ),
    "bybit": _Mechanism(
        "X-BAPI-TIMESTAMP + X-BAPI-RECV-WINDOW",
        _bybit,
        frozenset({"private"}),
        frozenset(
            {
                ("POST", "v5/order/create"),
                ("POST", "v5/order/cancel"),
                ("POST", "v5/order/amend"),
                ("POST", "v5/order/create-batch"),
                ("POST", "v5/order/cancel-batch"),
            }
        ),
        refusals=frozenset({"10002"}),
    ),
}


def expiry_mechanism(exchange_id: str) -> str | None:
    """How requests to ``exchange_id`` expire on the exchange's side; ``None`` when they
    cannot (a request delayed past its lease may then still execute)."""
    mechanism = _MECHANISMS.get(exchange_id)
    return None if mechanism is None else mechanism.description


def expiry_refusal(exchange_id: str, codes: set[str]) -> bool:
    """Whether an error with these exchange codes refused a request as expired (it was not
    executed)."""
    mechanism = _MECHANISMS.get(exchange_id)
    return mechanism is not None and not codes.isdisjoint(mechanism.refusals)


# -- measuring the exchange's clock -------------------------------------------------------


class ExchangeClock:
    """Measures the exchange's clock at start and every ``interval`` seconds (sooner after
    ``wake``), keeps the best sample and hands ccxt the offset for its own timestamps."""

    def __init__(
        self,
        client: Any,
        *,
        interval: float = 60.0,
        retry: float = 5.0,
        drift_ppm: float = 100.0,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._interval = interval
        self._retry = retry
        self._drift_ppm = drift_ppm
        self._mono = mono
        self._wall = wall
        self._wake = asyncio.Event()
        self._failing = False
        self.sample: ClockSample | None = None
        has = getattr(client, "has", None) or {}
        self.available = bool(has.get("fetchTime")) and callable(
            getattr(client, "fetch_time", None)
        )

    async def measure(self, samples: int = 1) -> bool:
        """Take ``samples`` readings (the best is kept); False when none succeeded. A failure
        is logged once until a measurement succeeds again; the previous sample stays."""
        best: ClockSample | None = None
        error = ""
        for _ in range(max(1, samples)):
            try:
                reading = await self._read()
            except _MEASURE_ERRORS as exc:  # keep the previous sample
                error = f"{type(exc).__name__}: {_short(exc)}"
                continue
            if best is None or reading.uncertainty < best.uncertainty:
                best = reading
        if best is None:
            if not self._failing:
                self._failing = True
                log.warning(
                    "exchange_clock_unmeasured",
                    exchange=str(self._client.id),
                    error=error,
                    kept=self.sample is not None,
                )
            return False
        self._failing = False
        previous = self.sample
        self.sample = preferred(previous, best, self._mono(), self._drift_ppm)
        if self.sample is best:
            self._feed_ccxt(best)
        if previous is None:
            log.info(
                "exchange_clock_measured",
                exchange=str(self._client.id),
                offset_ms=round(best.offset_wall * 1000, 1),
                uncertainty_ms=round(best.uncertainty * 1000, 1),
            )
        return True

    async def _read(self) -> ClockSample:
        t0_wall, t0_mono = self._wall(), self._mono()
        server_ms = await self._client.fetch_time()
        t1_wall, t1_mono = self._wall(), self._mono()
        if not isinstance(server_ms, int | float) or isinstance(server_ms, bool):
            raise TypeError(f"fetch_time answered {server_ms!r}")
        return clock_sample(float(server_ms), t0_wall, t1_wall, t0_mono, t1_mono)

    def _feed_ccxt(self, sample: ClockSample) -> None:
        """ccxt's nonce is ``milliseconds() - options["timeDifference"]``: make it the
        exchange's time, so the requests ccxt stamps itself are not refused either."""
        options = getattr(self._client, "options", None)
        if isinstance(options, dict):
            options["timeDifference"] = round(-sample.offset_wall * 1000)

    def wake(self) -> None:
        """Measure again soon (the exchange said a request's timestamp was off)."""
        self._wake.set()

    async def run(self) -> None:
        """Measure every ``interval`` seconds (every ``retry`` seconds until the first
        success, and right after ``wake``) until cancelled."""
        while True:
            delay = self._interval if self.sample is not None else self._retry
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.measure()


def _short(exc: BaseException) -> str:
    text = str(exc).split("?", 1)[0]
    return text[:200]


# -- putting it on the wire ---------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    owner: RequestExpiry
    expires_at: float
    applied: int = field(default=0)


_PENDING: contextvars.ContextVar[_Pending | None] = contextvars.ContextVar(
    "quantmesh_request_expiry", default=None
)


class RequestExpiry:
    """Puts an exchange-enforced expiry on the order writes a ccxt client signs.

    Installed on the client (its ``sign`` is wrapped) when the exchange has a mechanism.
    ``bound(expires_at)`` marks the requests signed inside it (in this task) as expiring;
    an order write signed inside it that cannot carry an expiry is refused, not sent
    (a ccxt change of endpoint must not silently drop the protection).
    """

    def __init__(
        self,
        client: Any,
        clock: ExchangeClock,
        margins: ExpiryMargins | None = None,
        *,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exchange_id = str(client.id)
        self.margins = margins or ExpiryMargins()
        self._clock = clock
        self._mono = mono
        mechanism = _MECHANISMS.get(self.exchange_id)
        sign = getattr(client, "sign", None)
        self._mechanism = mechanism if mechanism is not None and callable(sign) else None
        if self._mechanism is not None and sign is not None:
            client.sign = self._wrap(client, sign, self._mechanism)

    @property
    def enforced(self) -> bool:
        """Whether the exchange enforces the expiry (else it is only checked before sending)."""
        return self._mechanism is not None

    def wire(self, expires_at: float) -> WireExpiry:
        """The timestamp and deadline for a request signed now; ``RequestExpired`` when it
        must not be sent."""
        return wire_expiry(expires_at, self._mono(), self._clock.sample, self.margins)

    def check(self, expires_at: float) -> None:
        """``RequestExpired`` when a request with this expiry must not be sent now."""
        if self._mechanism is not None:
            self.wire(expires_at)
            return
        left = time_left(expires_at, self._mono(), self.margins)
        if not left >= self.margins.minimum:
            raise RequestExpired(f"{max(left, 0.0) * 1000:.0f} ms of lease left: not sent")

    @contextmanager
    def bound(self, expires_at: float | None, *, carried: bool = True) -> Iterator[None]:
        """Requests signed inside carry ``expires_at``; ``RequestExpired`` at once when too
        little is left to send one. ``carried``: the request inside is one the exchange can
        expire (an error is logged when none of its requests carried the expiry)."""
        if expires_at is None:
            yield
            return
        self.check(expires_at)
        pending = _Pending(self, expires_at)
        token = _PENDING.set(pending)
        try:
            yield
        finally:
            _PENDING.reset(token)
        if carried and self._mechanism is not None and pending.applied == 0:
            log.error(
                "request_expiry_not_applied",
                exchange=self.exchange_id,
                detail="the request went out without the exchange-side expiry",
            )

    @property
    def cancels_expire(self) -> bool:
        """Whether the exchange can expire a cancel (OKX cannot)."""
        return self._mechanism is not None and self._mechanism.cancels

    def _wrap(self, client: Any, sign: Sign, mechanism: _Mechanism) -> Sign:
        def expiring_sign(
            path: str, api: Any = "public", method: str = "GET", params: Any = None
        ) -> dict[str, Any]:
            params = {} if params is None else params  # OKX batch endpoints: a list
            pending = _PENDING.get()
            api_name = api[0] if isinstance(api, list | tuple) else str(api)
            if pending is None or pending.owner is not self or api_name not in mechanism.private:
                return sign(path, api, method, params)
            route = (method.upper(), path)
            if route in mechanism.expiring:
                wire = self.wire(pending.expires_at)
                pending.applied += 1
                return mechanism.apply(client, sign, path, api, method, params, wire)
            if route[0] != "GET" and route not in mechanism.exempt:
                raise RequestExpired(
                    f"{self.exchange_id} {route[0]} {path} cannot carry an expiry: not sent"
                )
            return sign(path, api, method, params)

        return expiring_sign
