"""The path a price took inside a candle: the fill model of the backtest, made explicit.

A candle only says where the price opened, how high and low it went and where it closed.
The backtest walks each candle as four straight segments through these vertices:

- ``nearer`` (the default): open -> the extreme nearer to the open -> the other extreme
  -> close. A candle that opened near its low went down first. On a tie, high first.
- ``pessimistic``: open -> high -> low -> close in every candle. A grid buys on the way
  down and sells on the way up, so a buy made at a candle's low is never sold at that
  same candle's high: no round trip is credited inside one candle that the data cannot
  prove.

Between two candles the price moves from the close to the next open (a gap is a segment
like any other). Along a segment the price passes every tick in between: a resting buy
fills at its own price when the path reaches it, a sell likewise, and the grid reacts at
every level the path crosses, as the daemon does on a live price stream.

Each vertex carries a time inside the candle: the open at the candle's open time, the
first extreme at 1/3 of its length, the second at 2/3, the close just before the next
candle (``VERTEX_TIMES``). What happens along a segment is stamped with the time of the
vertex the segment leads to.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["MODELS", "VERTEX_TIMES", "PathModel", "high_first"]

PathModel = Literal["nearer", "pessimistic"]
MODELS: tuple[PathModel, ...] = ("nearer", "pessimistic")
VERTEX_TIMES = (0.0, 1 / 3, 2 / 3, 0.999)
"""When each vertex happens, as a share of the candle's length from its open."""


def high_first(model: PathModel, open_: float, high: float, low: float) -> bool:
    """Whether the path visits the candle's high before its low."""
    if model == "pessimistic":
        return True
    return high - open_ <= open_ - low
