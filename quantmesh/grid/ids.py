"""Deterministic client order ids: one per (grid, level, side, cycle).

Every instance computes the same id for the same intent, so the exchange itself refuses a
second copy while the first is open. The form ``qm.<tag>.<B|S><level>.<cycle>`` fits
Binance's rule (``^[.A-Z:/a-z0-9_-]{1,36}$``) and most exchanges' length limits.
``tag`` identifies the grid (symbol, anchor and spacing): orders of a grid that was
re-anchored are not mistaken for current ones.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal

from quantmesh.domain import Side

PREFIX = "qm."
_PATTERN = re.compile(r"^qm\.([0-9a-f]{6})\.([BS])(-?\d+)\.(\d+)$")


@dataclass(frozen=True, slots=True)
class OrderKey:
    tag: str
    side: Side
    level: int
    cycle: int


def grid_tag(symbol: str, anchor: Decimal, interval: Decimal, spacing: str) -> str:
    """Six hex digits naming a grid; the same inputs give the same tag on every instance."""
    text = f"{symbol}|{anchor.normalize()}|{interval.normalize()}|{spacing}"
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def client_order_id(tag: str, level: int, side: Side, cycle: int) -> str:
    return f"{PREFIX}{tag}.{'B' if side == 'buy' else 'S'}{level}.{cycle}"


def parse_client_order_id(value: str) -> OrderKey | None:
    """The parts of one of our ids, or ``None`` for a foreign order."""
    match = _PATTERN.match(value)
    if match is None:
        return None
    tag, side, level, cycle = match.groups()
    return OrderKey(tag, "buy" if side == "B" else "sell", int(level), int(cycle))
