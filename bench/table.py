"""The benchmark table: one row per figure, with its baseline, ratio and target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Row", "fmt", "ratio", "render"]


@dataclass(frozen=True, slots=True)
class Row:
    bench: str  # empty: same benchmark as the row above
    measure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # None: no target


def fmt(value: float, digits: int = 3) -> str:
    """``digits`` significant digits, no exponent for everyday magnitudes; NaN as ``-``."""
    if math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(digits - 1 - magnitude, 0)
    return f"{value:,.{decimals}f}"


def ratio(value: float, baseline: float) -> str:
    if math.isnan(value) or math.isnan(baseline) or baseline <= 0:
        return "-"
    return f"{fmt(value / baseline)}x"


_HEADER = ("benchmark", "measure", "value", "baseline", "ratio", "target", "met")


def render(rows: Sequence[Row]) -> str:
    cells = [_HEADER]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "NO")
        cells.append((row.bench, row.measure, row.value, row.baseline, row.ratio, row.target, met))
    widths = [max(len(line[c]) for line in cells) for c in range(len(_HEADER))]
    right = {2, 3, 4}  # numbers

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[c]) if c in right else v.ljust(widths[c]) for c, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), line(["-" * w for w in widths])]
    for i, values in enumerate(cells[1:]):
        if values[0] and i > 0:
            out.append("")
        out.append(line(values))
    return "\n".join(out)
