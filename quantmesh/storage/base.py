"""The ``Repository`` protocol: every order, fill, round trip and grid change goes here.

A repository is scoped to one exchange (``exchange`` column); ``summaries`` reads all.
Writes are idempotent (keyed on the records' unique keys) so a write buffer can replay
them safely. Connectivity failures raise ``StorageUnavailable``; other failures
``StorageError``. ``durability`` tells what a write buffer holds (``None`` without one),
so readiness, status and the trader need not know which repository they have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from quantmesh.domain import Fill, Order, Side
from quantmesh.grid.state import GridShape, GridState, LevelState, RoundTrip


@dataclass(frozen=True, slots=True)
class TradeFilter:
    symbol: str | None = None
    side: Side | None = None
    client_order_id: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 1000
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SymbolSummary:
    exchange: str
    symbol: str
    last_price: Decimal | None
    last_price_at: float | None
    inventory: Decimal
    open_orders: int
    realized_pnl: Decimal
    round_trips: int


@dataclass(frozen=True, slots=True)
class ExecutionBatch:
    """Executions of one symbol stored together (``record_batch``'s arguments), for
    ``record_batches``."""

    symbol: str
    orders: tuple[Order, ...]
    fills: tuple[Fill, ...]
    levels: tuple[LevelState, ...]
    round_trips: tuple[RoundTrip, ...]
    fence: int


@dataclass(frozen=True, slots=True)
class DurabilityReport:
    """What a write buffer holds now: ``pending`` writes wait for the database,
    ``in_memory`` of them in its memory queue (which holds ``capacity``, the rest wait in
    the journal), ``volatile`` of them in memory only (the journal refused them: a crash
    would lose them)."""

    pending: int
    in_memory: int
    volatile: int
    capacity: int


class Repository(Protocol):
    async def start(self) -> None:
        """Connect and make sure the schema exists (and start whatever runs in the
        background, such as a write buffer's replayer)."""
        ...

    async def close(self) -> None: ...

    def durability(self) -> DurabilityReport | None:
        """What the write buffer holds now; ``None`` for a repository without one (a
        write is stored when it returns, or fails)."""
        ...

    async def replayed(self) -> bool:
        """Wait until the writes buffered through an outage are in the database; ``True``
        then, ``False`` at once when none wait (or the repository buffers nothing)."""
        ...

    # orders (the seed's SaveOrder), unique per (exchange, client_order_id)
    async def save_order(self, order: Order) -> None: ...

    async def save_orders(self, orders: Sequence[Order]) -> None: ...

    async def get_order(self, client_order_id: str) -> Order | None: ...

    async def get_open_orders(self, symbol: str) -> list[Order]: ...

    async def last_order_time(self, symbol: str) -> float | None:
        """When the latest recorded order of ``symbol`` was placed (``created_at``)."""
        ...

    # fills (the seed's SaveTrade / GetTrades), unique per (exchange, symbol, trade_id);
    # stored alone, without a grid write, a fill is not applied to its level (see
    # ``known_trade_ids``)
    async def save_fill(self, fill: Fill) -> None: ...

    async def save_fills(self, fills: Sequence[Fill]) -> None: ...

    async def get_trades(self, flt: TradeFilter) -> list[Fill]: ...

    # round trips, unique per (exchange, symbol, level, cycle)
    async def save_round_trip(self, trip: RoundTrip) -> None: ...

    async def get_round_trips(self, symbol: str) -> list[RoundTrip]: ...

    # grid state
    async def init_grid(
        self, symbol: str, anchor: Decimal, shape: GridShape | None = None
    ) -> GridState:
        """Create the grid with ``anchor`` and ``shape`` unless one exists; return the stored grid.

        The first anchor ever stored wins, so every restart and every instance trades the
        same levels.
        """
        ...

    async def set_grid_shape(self, symbol: str, shape: GridShape, fence: int) -> bool:
        """Store a new shape (spacing and step) unless a newer fence is stored."""
        ...

    async def load_grid(self, symbol: str) -> GridState | None: ...

    async def save_levels(self, symbol: str, levels: Sequence[LevelState], fence: int) -> bool:
        """Upsert ``levels`` if ``fence`` is not older than the stored fence.

        Returns ``False`` (and writes nothing) when a newer fence is stored.
        """
        ...

    async def record_execution(
        self,
        order: Order,
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int,
    ) -> bool:
        """Store an order update and its effect on the grid in one transaction.

        Fills already stored are ignored, except that a fill stored without its level is
        marked applied now; the levels are written only if ``fence`` is not older than the
        stored one. Returns ``False`` (nothing written) on a stale fence.
        """
        ...

    async def record_batch(
        self,
        symbol: str,
        orders: Sequence[Order],
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int,
    ) -> bool:
        """Several executions of ``symbol`` in one transaction, as ``record_execution``
        does one: order updates apply in sequence, the last state of each level wins;
        ``False`` (nothing written) on a stale fence."""
        ...

    async def record_batches(self, batches: Sequence[ExecutionBatch]) -> list[bool]:
        """Batches of several symbols (one each) in one transaction, each stored as
        ``record_batch`` stores it: per batch, ``False`` when its fence is stale (nothing
        of that batch written, the others are)."""
        ...

    async def known_trade_ids(self, symbol: str, trade_ids: Sequence[str]) -> set[str]:
        """Which of ``trade_ids`` are stored together with their effect on the grid level.

        A fill stored without its level (``save_fills``, or a former owner's execution
        replayed under a stale fence) is not known: the owner must apply it again.
        """
        ...

    async def unapplied_order_ids(self, symbol: str) -> list[str]:
        """Client order ids of ``symbol`` that have fills stored without their effect on
        the grid level, the order of the oldest such fill first."""
        ...

    async def save_last_price(self, symbol: str, price: Decimal, ts: float) -> None: ...

    async def summaries(self) -> list[SymbolSummary]:
        """Per (exchange, symbol): last price, inventory, open orders, realized PnL."""
        ...
