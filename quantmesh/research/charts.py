"""Chart geometry shared by the HTML and PNG reports: scaling series into a box (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Box", "scale"]

COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#0a7ea4")


@dataclass(frozen=True, slots=True)
class Box:
    """Data bounds, padded so a flat series still has height."""

    x0: float
    x1: float
    y0: float
    y1: float

    @classmethod
    def around(cls, xs: Sequence[float], ys: Sequence[float], zero: bool = False) -> Box:
        x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        finite = [y for y in ys if math.isfinite(y)]
        y0, y1 = (min(finite), max(finite)) if finite else (0.0, 1.0)
        if zero:
            y0, y1 = min(y0, 0.0), max(y1, 0.0)
        if x1 <= x0:
            x1 = x0 + 1.0
        if y1 <= y0:
            pad = abs(y0) * 0.01 or 1.0
            y0, y1 = y0 - pad, y1 + pad
        return cls(x0, x1, y0, y1)


def scale(box: Box, width: float, height: float) -> tuple[float, float, float, float]:
    """``(ax, bx, ay, by)``: pixel = a * value + b, y growing downwards."""
    ax = width / (box.x1 - box.x0)
    ay = -height / (box.y1 - box.y0)
    return ax, -ax * box.x0, ay, -ay * box.y1
