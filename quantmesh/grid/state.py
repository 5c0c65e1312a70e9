"""The grid's data: its parameters and spec, its shape, per-level state, round trips (pure)."""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Literal

Spacing = Literal["arithmetic", "geometric"]


@dataclass(frozen=True, slots=True)
class GridParams:
    """One symbol's grid as configured: what settings produce and the planner consumes.

    ``interval`` is the absolute price step for arithmetic spacing and the ratio between
    neighbouring levels minus one (``0.005`` = 0.5 %) for geometric spacing.
    ``order_quantity`` is in quote currency per level; ``max_position`` caps the quote value
    (at level prices) of inventory plus open buys. ``anchor_price`` is where a new grid is
    anchored (``None``: at the first price seen); a stored grid keeps its own anchor.
    """

    symbol: str
    interval: Decimal
    order_quantity: Decimal
    buy_window: int
    sell_window: int
    spacing: Spacing = "arithmetic"
    min_order_value: Decimal = Decimal(0)
    anchor_price: Decimal | None = None
    lower_price: Decimal | None = None
    upper_price: Decimal | None = None
    max_position: Decimal | None = None
    cancel_hysteresis: int = 2

    def anchored_at(self, anchor: Decimal) -> GridSpec:
        """These parameters on a grid whose levels are counted from ``anchor``."""
        values = {param.name: getattr(self, param.name) for param in fields(GridParams)}
        return GridSpec(**values, anchor=anchor)


@dataclass(frozen=True, slots=True, kw_only=True)
class GridSpec(GridParams):
    """The shape of one symbol's grid: its parameters plus the anchor in use, the persisted
    one (``anchor_price`` or the first price seen when the grid was created)."""

    anchor: Decimal


@dataclass(frozen=True, slots=True)
class GridShape:
    """What the level indices mean: the spacing and the step, stored with the grid.

    A grid whose shape changes while it holds inventory or open orders would price them on
    other levels, so the trader refuses that.
    """

    spacing: Spacing
    interval: Decimal


@dataclass(frozen=True, slots=True)
class LevelState:
    """One price level.

    ``holding`` is the base amount bought on this level and not yet sold; ``cost`` the
    quote paid for it including fees; ``cycle`` counts completed buys.
    """

    index: int
    holding: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    cycle: int = 0


@dataclass(slots=True)
class GridState:
    """Everything persisted about one symbol's grid.

    ``levels`` only holds levels that differ from the default ``LevelState(index)``; it is
    changed through ``set_level`` only, which keeps the index of the levels holding
    something (``holding_indices``) beside it. ``fence`` is the fencing token of the last
    writer (0 without distributed locks); ``shape`` is ``None`` for a grid stored before
    shapes were recorded.
    """

    symbol: str
    anchor: Decimal
    levels: dict[int, LevelState] = field(default_factory=dict)
    fence: int = 0
    shape: GridShape | None = None
    _holding: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._holding = sorted(i for i, level in self.levels.items() if level.holding > 0)

    def level(self, index: int) -> LevelState:
        found = self.levels.get(index)
        return found if found is not None else LevelState(index)

    def holding_indices(self) -> list[int]:
        """The indices of the levels whose holding is positive (dust included), ascending.

        The planner walks these instead of every level the grid ever traded; do not change
        the list."""
        return self._holding

    def set_level(self, level: LevelState) -> None:
        index = level.index
        before = self.levels.get(index)
        if level.holding == 0 and level.cost == 0 and level.cycle == 0:
            self.levels.pop(index, None)
        else:
            self.levels[index] = level
        held = level.holding > 0
        if held != (before is not None and before.holding > 0):
            if held:
                insort(self._holding, index)
            else:
                del self._holding[bisect_left(self._holding, index)]


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A completed buy-then-sell on one level; unique per (symbol, level, cycle).

    ``buy_cost`` is the quote paid including buy fees; ``sell_proceeds`` the quote received
    net of sell fees; ``pnl = sell_proceeds - buy_cost``.
    """

    symbol: str
    level: int
    cycle: int
    amount: Decimal
    buy_cost: Decimal
    sell_proceeds: Decimal
    pnl: Decimal
    closed_at: float
