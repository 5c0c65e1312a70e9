"""Crash points: the tests that kill the daemon at an exact step arm them.

``QUANTMESH_FAILPOINTS="fill_applied@2"`` kills the process (SIGKILL, as ``kill -9`` does:
no cleanup, no flush) the second time it reaches ``fill_applied``; several points are
separated by commas, ``@N`` defaults to 1. Unset, as in any real deployment, reaching a
point costs one test of an empty dict. The points:

- ``order_answered``: the exchange accepted an order; nothing of it is stored yet;
- ``fill_applied``: a fill is applied to the grid in memory; its record is only queued;
- ``fills_stored``: a transaction holding fills is stored; the trader may not have acted
  on them yet.
"""

from __future__ import annotations

import os
import signal
import sys

POINTS = ("order_answered", "fill_applied", "fills_stored")


def parse(spec: str) -> dict[str, int]:
    """``"a@2,b"`` -> ``{"a": 2, "b": 1}``; ``ValueError`` naming what is wrong."""
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("@")
        if name not in POINTS:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(POINTS)}")
        if count and (not count.isdigit() or int(count) < 1):
            raise ValueError(f"failpoint {name}: @{count} is not a count of 1 or more")
        armed[name] = int(count or 1)
    return armed


_armed: dict[str, int] = {}


def arm(spec: str) -> None:
    """Arm the points of ``spec`` (the daemon's start reads ``QUANTMESH_FAILPOINTS``)."""
    _armed.clear()
    _armed.update(parse(spec))


def armed() -> list[str]:
    return sorted(_armed)


def reach(name: str) -> None:
    """Kill the process if ``name`` is armed and this is its counted hit."""
    if not _armed or name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] > 0:
        return
    sys.stderr.write(f'{{"event": "failpoint_reached", "failpoint": "{name}"}}\n')
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
