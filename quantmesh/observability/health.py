"""Readiness: named checks, each saying whether its part can trade and why not.

Components register a check; ``/readyz`` runs them all and answers 200 only when every
one passes, naming each failing check in the body. Checks are plain functions reading
in-memory state: a readiness probe must answer fast even when a backend hangs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str = ""


CheckFn = Callable[[], Check]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, Check]

    def as_json(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()},
            "failing": [name for name, c in self.checks.items() if not c.ok],
        }


class Health:
    """The registry of readiness checks. A check that raises counts as failing."""

    def __init__(self) -> None:
        self._checks: dict[str, CheckFn] = {}

    def register(self, name: str, check: CheckFn) -> None:
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is registered twice")
        self._checks[name] = check

    def readiness(self) -> Readiness:
        results: dict[str, Check] = {}
        for name, check in self._checks.items():
            try:
                results[name] = check()
            except Exception as exc:  # noqa: BLE001 - a broken check must fail, not break the probe
                results[name] = Check(False, f"check failed: {type(exc).__name__}: {exc}")
        return Readiness(all(c.ok for c in results.values()), results)
