"""``SqlRepository``: the ``Repository`` protocol over SQLAlchemy Core.

One code path for SQLite, PostgreSQL and MySQL/MariaDB: portable column types
(``models``), dialect-aware upserts (``engine.upsert``), writes keyed on unique constraints
so replaying them is harmless. SQLite has a single writer, so writes through one
repository are serialised by an ``asyncio.Lock`` there. ``ExactDecimal`` columns are never
compared or summed in SQL on SQLite (they are text there); that happens in Python.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import fields, replace
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any, Final, TypeVar, get_args

import structlog
from sqlalchemy import Column, Table, bindparam, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from quantmesh.domain import CLOSED_STATUSES, Fill, Order, OrderStatus, Side
from quantmesh.errors import StorageError
from quantmesh.grid.state import GridState, LevelState, RoundTrip
from quantmesh.storage import models as m
from quantmesh.storage.base import SymbolSummary, TradeFilter
from quantmesh.storage.engine import map_db_error, upsert

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = structlog.get_logger(__name__)
_T = TypeVar("_T", bound="DataclassInstance")

_IN_CHUNK: Final = 500  # ids per IN (...) list; stays under every backend's bind limit
_SIDES: Final = frozenset(get_args(Side))
_STATUSES: Final = frozenset(get_args(OrderStatus))
# Sums of NUMERIC(36, 18) values need more than the default 28 digits to stay exact.
_EXACT: Final = Context(prec=m.PRECISION + 20)

_ORDER_KEY: Final = ("exchange", "client_order_id")
_TRADE_KEY: Final = ("exchange", "symbol", "trade_id")
_ROUND_TRIP_KEY: Final = ("exchange", "symbol", "level", "cycle")
_GRID_KEY: Final = ("exchange", "symbol")
_LEVEL_KEY: Final = ("exchange", "symbol", "level_index")
_LEVEL_VALUES: Final = ("holding", "cost", "cycle")


def _typed(name: str, column: Column[Any]) -> Any:
    return bindparam(name, type_=column.type)


_ORDER_UPDATE: Final = (
    update(m.orders)
    .where(
        m.orders.c.exchange == _typed("k_exchange", m.orders.c.exchange),
        m.orders.c.client_order_id == _typed("k_client_order_id", m.orders.c.client_order_id),
    )
    .values(
        status=_typed("v_status", m.orders.c.status),
        filled=_typed("v_filled", m.orders.c.filled),
        exchange_order_id=_typed("v_exchange_order_id", m.orders.c.exchange_order_id),
        updated_at=_typed("v_updated_at", m.orders.c.updated_at),
    )
)


def merge_order(stored: Order, incoming: Order) -> Order:
    """The stored order after applying ``incoming``, a possibly late or stale update.

    A closed order never goes back to open, ``filled`` never decreases, a known exchange
    order id is kept when the update has none; symbol, side, price, amount and
    ``created_at`` are fixed by the first write.
    """
    status = incoming.status
    if stored.status in CLOSED_STATUSES and status == "open":
        status = stored.status
    return replace(
        stored,
        status=status,
        filled=max(stored.filled, incoming.filled),
        exchange_order_id=incoming.exchange_order_id or stored.exchange_order_id,
        updated_at=max(stored.updated_at, incoming.updated_at),
    )


def _checked(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """Refuse values a column cannot hold, alike on every backend (MySQL would truncate)."""
    for key, value in row.items():
        if isinstance(value, str):
            length = getattr(table.c[key].type, "length", None)
            if length is not None and len(value) > length:
                raise StorageError(
                    f"{table.name}.{key} is longer than {length} characters: {value[:80]!r}"
                )
        elif isinstance(value, Decimal):
            try:
                m.check_decimal(value)
            except ValueError as exc:
                raise StorageError(f"{table.name}.{key}: {exc}") from None
    return row


def _side(value: str) -> Side:
    if value not in _SIDES:
        raise StorageError(f"stored side {value!r} is not buy or sell")
    return value  # type: ignore[return-value]  # narrowed by the membership test


def _status(value: str) -> OrderStatus:
    if value not in _STATUSES:
        raise StorageError(f"stored order status {value!r} is unknown")
    return value  # type: ignore[return-value]  # narrowed by the membership test


def _from_row(cls: type[_T], row: Row[Any]) -> _T:
    """Build the domain object whose fields are columns of ``row`` (same names)."""
    mapping = row._mapping
    values = {f.name: mapping[f.name] for f in fields(cls)}
    if "side" in values:
        values["side"] = _side(values["side"])
    if "status" in values:
        values["status"] = _status(values["status"])
    return cls(**values)


class SqlRepository:
    """The repository for one exchange; ``summaries`` reads every exchange.

    It owns ``engine``: ``close`` disposes of it.
    """

    def __init__(
        self, engine: AsyncEngine, exchange: str, clock: Callable[[], float] = time.time
    ) -> None:
        if not exchange or len(exchange) > m.EXCHANGE_LEN:
            raise ValueError(f"exchange name must be 1 to {m.EXCHANGE_LEN} characters")
        self._engine = engine
        self._exchange = exchange
        self._clock = clock
        self._dialect = engine.dialect.name
        self._write_lock = asyncio.Lock() if self._dialect == "sqlite" else None

    @property
    def exchange(self) -> str:
        return self._exchange

    # plumbing

    @asynccontextmanager
    async def _guard(self, operation: str) -> AsyncIterator[None]:
        try:
            yield
        except (SQLAlchemyError, OSError) as exc:
            raise map_db_error(exc, operation) from exc

    def _serialised(self) -> AbstractAsyncContextManager[Any]:
        return self._write_lock if self._write_lock is not None else nullcontext()

    @asynccontextmanager
    async def _read(self, operation: str) -> AsyncIterator[AsyncConnection]:
        async with self._guard(operation), self._engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block succeeds."""
        async with self._guard(operation), self._serialised(), self._engine.begin() as conn:
            yield conn

    def _row(self, table: Table, obj: Any, **extra: Any) -> dict[str, Any]:
        values = {f.name: getattr(obj, f.name) for f in fields(obj)}
        return _checked(table, {"exchange": self._exchange, **values, **extra})

    # lifecycle

    async def start(self) -> None:
        async with self._write("start") as conn:
            await conn.run_sync(m.metadata.create_all)
        log.info("storage_started", exchange=self._exchange, dialect=self._dialect)

    async def close(self) -> None:
        await self._engine.dispose()

    # orders

    async def save_order(self, order: Order) -> None:
        await self.save_orders([order])

    async def save_orders(self, orders: Sequence[Order]) -> None:
        """Insert new orders, merge updates into stored ones (see ``merge_order``)."""
        if orders:
            rows = [self._row(m.orders, order) for order in orders]
            async with self._write("save_orders") as conn:
                await self._save_orders(conn, orders, rows)

    async def _save_orders(
        self, conn: AsyncConnection, orders: Sequence[Order], rows: list[dict[str, Any]]
    ) -> None:
        batches: dict[str, list[Order]] = {}
        firsts: dict[str, dict[str, Any]] = {}
        for order, row in zip(orders, rows, strict=True):
            batches.setdefault(order.client_order_id, []).append(order)
            firsts.setdefault(order.client_order_id, row)
        # insert first, so every order has a row to lock before merging into it
        await conn.execute(upsert(self._dialect, m.orders, _ORDER_KEY), list(firsts.values()))
        stored = await self._orders_by_id(conn, list(batches), for_update=True)
        changes = []
        for client_order_id, batch in batches.items():
            before = stored.get(client_order_id)
            if before is None:
                raise StorageError(f"order {client_order_id} vanished while saving it")
            after = before
            for incoming in batch:
                after = merge_order(after, incoming)
                if incoming.status == "open" and after.status != "open":
                    log.debug("stale_order_update_ignored", client_order_id=client_order_id)
            if after != before:
                changes.append(
                    {
                        "k_exchange": self._exchange,
                        "k_client_order_id": client_order_id,
                        "v_status": after.status,
                        "v_filled": after.filled,
                        "v_exchange_order_id": after.exchange_order_id,
                        "v_updated_at": after.updated_at,
                    }
                )
        if changes:
            await conn.execute(_ORDER_UPDATE, changes)

    async def get_order(self, client_order_id: str) -> Order | None:
        async with self._read("get_order") as conn:
            found = await self._orders_by_id(conn, [client_order_id], for_update=False)
        return found.get(client_order_id)

    async def get_open_orders(self, symbol: str) -> list[Order]:
        t = m.orders
        stmt = (
            select(t)
            .where(t.c.exchange == self._exchange, t.c.symbol == symbol, t.c.status == "open")
            .order_by(t.c.created_at, t.c.id)
        )
        async with self._read("get_open_orders") as conn:
            rows = (await conn.execute(stmt)).all()
        return [_from_row(Order, row) for row in rows]

    async def _orders_by_id(
        self, conn: AsyncConnection, ids: list[str], *, for_update: bool
    ) -> dict[str, Order]:
        t = m.orders
        found: dict[str, Order] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            stmt = select(t).where(
                t.c.exchange == self._exchange,
                t.c.client_order_id.in_(ids[start : start + _IN_CHUNK]),
            )
            if for_update:
                stmt = stmt.with_for_update()
            for row in await conn.execute(stmt):
                found[row.client_order_id] = _from_row(Order, row)
        return found

    # fills

    async def save_fill(self, fill: Fill) -> None:
        await self.save_fills([fill])

    async def save_fills(self, fills: Sequence[Fill]) -> None:
        """Insert fills not stored yet; a fill seen before is left as it is."""
        rows = self._fill_rows(fills)
        if rows:
            async with self._write("save_fills") as conn:
                await conn.execute(upsert(self._dialect, m.trades, _TRADE_KEY), rows)

    def _fill_rows(self, fills: Sequence[Fill]) -> list[dict[str, Any]]:
        unique: dict[tuple[str, str], Fill] = {}
        for fill in fills:
            unique.setdefault((fill.symbol, fill.trade_id), fill)
        return [self._row(m.trades, fill) for fill in unique.values()]

    async def known_trade_ids(self, symbol: str, trade_ids: Sequence[str]) -> set[str]:
        t = m.trades
        ids = list(dict.fromkeys(trade_ids))
        known: set[str] = set()
        async with self._read("known_trade_ids") as conn:
            for start in range(0, len(ids), _IN_CHUNK):
                stmt = select(t.c.trade_id).where(
                    t.c.exchange == self._exchange,
                    t.c.symbol == symbol,
                    t.c.trade_id.in_(ids[start : start + _IN_CHUNK]),
                )
                known.update(await conn.scalars(stmt))
        return known

    async def get_trades(self, flt: TradeFilter) -> list[Fill]:
        """Fills of this exchange matching ``flt``, oldest first (by ts, then insertion).

        ``since`` is inclusive, ``until`` exclusive.
        """
        if flt.limit < 0 or flt.offset < 0:
            raise ValueError("limit and offset must not be negative")
        t = m.trades
        stmt = select(t).where(t.c.exchange == self._exchange)
        if flt.symbol is not None:
            stmt = stmt.where(t.c.symbol == flt.symbol)
        if flt.side is not None:
            stmt = stmt.where(t.c.side == flt.side)
        if flt.client_order_id is not None:
            stmt = stmt.where(t.c.client_order_id == flt.client_order_id)
        if flt.since is not None:
            stmt = stmt.where(t.c.ts >= flt.since)
        if flt.until is not None:
            stmt = stmt.where(t.c.ts < flt.until)
        stmt = stmt.order_by(t.c.ts, t.c.id).limit(flt.limit).offset(flt.offset)
        async with self._read("get_trades") as conn:
            rows = (await conn.execute(stmt)).all()
        return [_from_row(Fill, row) for row in rows]

    # round trips

    async def save_round_trip(self, trip: RoundTrip) -> None:
        await self.save_round_trips([trip])

    async def save_round_trips(self, trips: Sequence[RoundTrip]) -> None:
        """Insert round trips not stored yet (keyed on symbol, level, cycle)."""
        rows = self._round_trip_rows(trips)
        if rows:
            async with self._write("save_round_trips") as conn:
                await conn.execute(upsert(self._dialect, m.round_trips, _ROUND_TRIP_KEY), rows)

    def _round_trip_rows(self, trips: Sequence[RoundTrip]) -> list[dict[str, Any]]:
        unique: dict[tuple[str, int, int], RoundTrip] = {}
        for trip in trips:
            unique.setdefault((trip.symbol, trip.level, trip.cycle), trip)
        return [self._row(m.round_trips, trip) for trip in unique.values()]

    async def get_round_trips(self, symbol: str) -> list[RoundTrip]:
        t = m.round_trips
        stmt = (
            select(t)
            .where(t.c.exchange == self._exchange, t.c.symbol == symbol)
            .order_by(t.c.closed_at, t.c.id)
        )
        async with self._read("get_round_trips") as conn:
            rows = (await conn.execute(stmt)).all()
        return [_from_row(RoundTrip, row) for row in rows]

    # grid state

    async def init_grid(self, symbol: str, anchor: Decimal) -> GridState:
        row = _checked(
            m.grids,
            {
                "exchange": self._exchange,
                "symbol": symbol,
                "anchor": anchor,
                "fence": 0,
                "last_price": None,
                "last_price_at": None,
                "updated_at": self._clock(),
            },
        )
        async with self._write("init_grid") as conn:
            await conn.execute(upsert(self._dialect, m.grids, _GRID_KEY), [row])
            grid = await self._load_grid(conn, symbol)
        if grid is None:
            raise StorageError(f"grid {symbol} on {self._exchange} vanished after creating it")
        if grid.anchor != anchor:
            log.info("grid_anchor_kept", symbol=symbol, stored=str(grid.anchor), asked=str(anchor))
        return grid

    async def load_grid(self, symbol: str) -> GridState | None:
        async with self._read("load_grid") as conn:
            return await self._load_grid(conn, symbol)

    async def _load_grid(self, conn: AsyncConnection, symbol: str) -> GridState | None:
        g, lv = m.grids, m.grid_levels
        head = (
            await conn.execute(
                select(g.c.anchor, g.c.fence).where(
                    g.c.exchange == self._exchange, g.c.symbol == symbol
                )
            )
        ).one_or_none()
        if head is None:
            return None
        state = GridState(symbol=symbol, anchor=head.anchor, fence=head.fence)
        levels = await conn.execute(
            select(lv.c.level_index, lv.c.holding, lv.c.cost, lv.c.cycle)
            .where(lv.c.exchange == self._exchange, lv.c.symbol == symbol)
            .order_by(lv.c.level_index)
        )
        for row in levels:
            # set_level leaves default levels out, as GridState requires
            state.set_level(LevelState(row.level_index, row.holding, row.cost, row.cycle))
        return state

    async def save_levels(self, symbol: str, levels: Sequence[LevelState], fence: int) -> bool:
        """Compare-and-set the grid's fence, then upsert ``levels``, in one transaction."""
        rows = self._level_rows(symbol, levels)
        async with self._write("save_levels") as conn:
            if not await self._claim_fence(conn, symbol, fence):
                return False
            await self._upsert_levels(conn, rows)
        return True

    async def record_execution(
        self,
        order: Order,
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int,
    ) -> bool:
        """Order update, its fills, the levels and round trips it caused: all or nothing.

        Returns ``False`` and writes nothing when a newer fence is stored.
        """
        order_rows = [self._row(m.orders, order)]
        fill_rows = self._fill_rows(fills)
        trip_rows = self._round_trip_rows(round_trips)
        level_rows = self._level_rows(order.symbol, levels)
        async with self._write("record_execution") as conn:
            if not await self._claim_fence(conn, order.symbol, fence):
                return False
            await self._save_orders(conn, [order], order_rows)
            if fill_rows:
                await conn.execute(upsert(self._dialect, m.trades, _TRADE_KEY), fill_rows)
            if trip_rows:
                stmt = upsert(self._dialect, m.round_trips, _ROUND_TRIP_KEY)
                await conn.execute(stmt, trip_rows)
            await self._upsert_levels(conn, level_rows)
        return True

    def _level_rows(self, symbol: str, levels: Sequence[LevelState]) -> list[dict[str, Any]]:
        unique = {level.index: level for level in levels}  # the last state of a level wins
        return [
            _checked(
                m.grid_levels,
                {
                    "exchange": self._exchange,
                    "symbol": symbol,
                    "level_index": level.index,
                    "holding": level.holding,
                    "cost": level.cost,
                    "cycle": level.cycle,
                },
            )
            for level in unique.values()
        ]

    async def _claim_fence(self, conn: AsyncConnection, symbol: str, fence: int) -> bool:
        """Store ``fence`` unless a newer one is stored; ``False`` when it is."""
        g = m.grids
        where = (g.c.exchange == self._exchange, g.c.symbol == symbol)
        claim = (
            update(g)
            .where(*where, g.c.fence <= fence)
            .values(fence=fence, updated_at=self._clock())
        )
        # MySQL reports matched rather than changed rows: SQLAlchemy sets FOUND_ROWS
        if (await conn.execute(claim)).rowcount > 0:
            return True
        stored = await conn.scalar(select(g.c.fence).where(*where))
        if stored is None:
            raise StorageError(f"grid {symbol} on {self._exchange} is not initialised")
        log.warning("grid_write_fenced", symbol=symbol, fence=fence, stored_fence=stored)
        return False

    async def _upsert_levels(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        if rows:
            stmt = upsert(self._dialect, m.grid_levels, _LEVEL_KEY, _LEVEL_VALUES)
            await conn.execute(stmt, rows)

    async def save_last_price(self, symbol: str, price: Decimal, ts: float) -> None:
        g = m.grids
        values = _checked(g, {"last_price": price, "last_price_at": ts})
        stmt = update(g).where(g.c.exchange == self._exchange, g.c.symbol == symbol).values(values)
        async with self._write("save_last_price") as conn:
            updated = (await conn.execute(stmt)).rowcount
        if updated == 0:
            log.warning("last_price_for_unknown_grid", symbol=symbol)

    # status

    async def summaries(self) -> list[SymbolSummary]:
        g, o = m.grids, m.orders
        heads_stmt = select(g.c.exchange, g.c.symbol, g.c.last_price, g.c.last_price_at)
        open_stmt = (
            select(o.c.exchange, o.c.symbol, func.count())
            .where(o.c.status == "open")
            .group_by(o.c.exchange, o.c.symbol)
        )
        async with self._read("summaries") as conn:
            heads = (await conn.execute(heads_stmt.order_by(g.c.exchange, g.c.symbol))).all()
            inventory = await self._sums(conn, m.grid_levels.c.holding)
            pnl = await self._sums(conn, m.round_trips.c.pnl)
            open_orders = {(r[0], r[1]): int(r[2]) for r in await conn.execute(open_stmt)}
        summaries = []
        for head in heads:
            key = (head.exchange, head.symbol)
            realized, trips = pnl.get(key, (Decimal(0), 0))
            summaries.append(
                SymbolSummary(
                    exchange=head.exchange,
                    symbol=head.symbol,
                    last_price=head.last_price,
                    last_price_at=head.last_price_at,
                    inventory=inventory.get(key, (Decimal(0), 0))[0],
                    open_orders=open_orders.get(key, 0),
                    realized_pnl=realized,
                    round_trips=trips,
                )
            )
        return summaries

    async def _sums(
        self, conn: AsyncConnection, column: Column[Any]
    ) -> dict[tuple[str, str], tuple[Decimal, int]]:
        """Exact per-(exchange, symbol) sum and row count of a decimal column."""
        table = column.table
        keys = (table.c.exchange, table.c.symbol)
        totals: dict[tuple[str, str], tuple[Decimal, int]] = {}
        if self._dialect == "sqlite":  # decimals are text there: add them up here
            for exchange, symbol, value in await conn.execute(select(*keys, column)):
                total, count = totals.get((exchange, symbol), (Decimal(0), 0))
                totals[(exchange, symbol)] = (_EXACT.add(total, value), count + 1)
            return totals
        stmt = select(*keys, func.sum(column), func.count()).group_by(*keys)
        for exchange, symbol, total, count in await conn.execute(stmt):
            totals[(exchange, symbol)] = (Decimal(total), int(count))
        return totals
