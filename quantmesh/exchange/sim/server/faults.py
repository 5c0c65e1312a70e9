"""Fault injection for the simulator: which faults are on, and the dice that decide each call.

Faults can be changed while the server runs (``POST /_sim/faults``), so one server serves
a whole test module. A seeded generator makes a run repeatable.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Outcome = Literal["ok", "server_error", "rate_limited"]


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, and how often (rates are probabilities per REST call)."""

    latency: float = 0.0  # seconds added to every REST call and WebSocket API answer
    error_rate: float = 0.0  # REST calls answered 503 before doing anything
    rate_limit_rate: float = 0.0  # REST calls answered 429 with Retry-After
    retry_after: float = 1.0  # seconds in the Retry-After header of a 429
    accept_timeout_rate: float = 0.0  # new orders accepted, then the answer withheld
    hang: float = 30.0  # how long a withheld answer hangs (longer than the client waits)
    ws_drop_after: float = 0.0  # close every WebSocket this long after it opened (0: never)

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"fault {field.name} must be a finite number >= 0, got {value!r}")
        for name in ("error_rate", "rate_limit_rate", "accept_timeout_rate"):
            if getattr(self, name) > 1:
                raise ValueError(f"fault {name} is a probability: at most 1")

    def updated(self, changes: dict[str, Any]) -> Faults:
        """A copy with ``changes`` applied; unknown names raise ``ValueError``."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {sorted(known)}")
        return replace(self, **{k: float(v) for k, v in changes.items()})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class FaultDice:
    """Rolls the per-call faults."""

    def __init__(self, faults: Faults, seed: int | None = None) -> None:
        self.faults = faults
        self._rng = random.Random(seed)
        self._burst_after = 0  # REST calls still answered before the burst
        self._burst_left = 0  # 429s still to answer

    def burst(self, after: int, count: int) -> None:
        """A deterministic rate-limit burst: the next ``after`` REST calls go through, the
        ``count`` after them are answered 429 (a test's "429 in the middle")."""
        if after < 0 or count < 0:
            raise ValueError("after and count must be >= 0")
        self._burst_after, self._burst_left = after, count

    def call(self) -> Outcome:
        if self._burst_left:
            if self._burst_after:
                self._burst_after -= 1
            else:
                self._burst_left -= 1
                return "rate_limited"
        faults = self.faults
        roll = self._rng.random()
        if roll < faults.error_rate:
            return "server_error"
        if roll < faults.error_rate + faults.rate_limit_rate:
            return "rate_limited"
        return "ok"

    def withhold_answer(self) -> bool:
        return self._rng.random() < self.faults.accept_timeout_rate
