"""``SqlRepository``: the ``Repository`` protocol over SQLAlchemy Core.

One code path for SQLite, PostgreSQL and MySQL/MariaDB: portable column types
(``models``), dialect-aware upserts (``statements.upsert``), writes keyed on unique constraints
so replaying them is harmless. ``ExactDecimal`` columns are never compared or summed in
SQL on SQLite (they are text there); that happens in Python.

Each operation's database work is one synchronous function of a ``Connection``, handed
to a ``runner`` as one transaction: on SQLite that is one hop to the repository's
database thread, which also serialises its writers. Statements are built once, so
SQLAlchemy's compiled cache is hit without rebuilding them per call. Fills, the rows written
in bulk (a replay stores thousands), go to the driver as a ``bulk.BulkUpsert`` of
values checked and bound a column at a time (``rows.Columns``), not row by row through
SQLAlchemy's parameter handling. A caller cancelled
while its write runs stops waiting, but the write may still commit (see ``runner``).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from decimal import Decimal
from itertools import chain
from typing import TYPE_CHECKING, Any, Final, TypeVar

import structlog
from sqlalchemy import Column, Connection, Engine, Table, func, select

from quantmesh.domain import Fill, Order
from quantmesh.errors import StartupError, StorageError
from quantmesh.grid.state import GridShape, GridState, LevelState, RoundTrip
from quantmesh.observability.metrics import DbMetrics
from quantmesh.storage import migrate, models, statements
from quantmesh.storage.base import DurabilityReport, ExecutionBatch, SymbolSummary, TradeFilter
from quantmesh.storage.bulk import BulkUpsert
from quantmesh.storage.engine import check_server
from quantmesh.storage.prepared import Prepared
from quantmesh.storage.rows import Columns, checked, chunks, from_row, merge_order
from quantmesh.storage.runner import Runner, runner_for
from quantmesh.storage.statements import upsert

if TYPE_CHECKING:  # the asyncio layer is loaded for a server database only
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)
_R = TypeVar("_R")
_TRADE_COLUMNS = ("exchange", *(f.name for f in fields(Fill)), "level_applied")
_TRADE_KEY = operator.attrgetter("symbol", "trade_id")
_SYMBOL = operator.attrgetter("symbol")
_ORDER_COLUMNS: Final = ("exchange", *(f.name for f in fields(Order)))
_ROUND_TRIP_COLUMNS: Final = ("exchange", *(f.name for f in fields(RoundTrip)))
_LEVEL_COLUMNS: Final = ("exchange", "symbol", "level_index", "holding", "cost", "cycle")


class SqlRepository:
    """The repository for one exchange; ``summaries`` reads every exchange.

    It owns ``engine`` (from ``create_engine_for``): ``close`` disposes of it, after the
    work already handed to it is done.
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        exchange: str,
        clock: Callable[[], float] = time.time,
        metrics: DbMetrics | None = None,
        *,
        auto_migrate: bool = True,
        timeout: float | None = None,
    ) -> None:
        if not exchange or len(exchange) > models.EXCHANGE_LEN:
            raise ValueError(f"exchange name must be 1 to {models.EXCHANGE_LEN} characters")
        self._engine = engine
        self._runner: Runner = runner_for(engine, metrics, timeout)
        self._exchange = exchange
        self._clock = clock
        self._auto_migrate = auto_migrate
        self._dialect = dialect = engine.dialect.name
        # With the write lock held from the start (SQLite), an order found missing is still
        # missing when inserted; otherwise another instance may have inserted it meanwhile.
        self._inserts_are_exclusive = self._runner.exclusive_writes
        # the statements of every execution's transaction, compiled once (prepared.py)
        self._insert_orders = Prepared(
            engine.dialect,
            upsert(dialect, models.orders, statements.ORDER_KEY),
            _ORDER_COLUMNS,
        )
        self._update_orders = Prepared(engine.dialect, statements.ORDER_UPDATE)
        self._claim = Prepared(engine.dialect, statements.FENCE_CLAIM)
        # fills stored without their level: new rows unapplied, a stored row left alone
        self._insert_trades = BulkUpsert(
            engine.dialect, models.trades, statements.TRADE_KEY, columns=_TRADE_COLUMNS
        )
        # fills stored with their level: new rows applied, a stored unapplied row becomes so
        self._insert_applied_trades = BulkUpsert(
            engine.dialect,
            models.trades,
            statements.TRADE_KEY,
            statements.TRADE_APPLIED_VALUES,
            columns=self._insert_trades.names,
        )
        if self._insert_applied_trades.names != self._insert_trades.names:  # one Columns for both
            raise StorageError("the fill statements bind their columns in different orders")
        self._trade_columns = Columns(
            engine.dialect, models.trades, Fill, self._insert_trades.names
        )
        self._insert_round_trips = Prepared(
            engine.dialect,
            upsert(dialect, models.round_trips, statements.ROUND_TRIP_KEY),
            _ROUND_TRIP_COLUMNS,
        )
        self._insert_grid = upsert(dialect, models.grids, statements.GRID_KEY)
        self._upsert_levels = Prepared(
            engine.dialect,
            upsert(dialect, models.grid_levels, statements.LEVEL_KEY, statements.LEVEL_VALUES),
            _LEVEL_COLUMNS,
        )

    @property
    def exchange(self) -> str:
        return self._exchange

    # plumbing

    @property
    def runner(self) -> Runner:
        """The runner of this repository's transactions (a store of other tables shares
        it: one writer thread on SQLite, one pool on a server)."""
        return self._runner

    async def _write(self, operation: str, work: Callable[[Connection], _R]) -> _R:
        """``work`` in one transaction, committed when it returns."""
        return await self._runner.run(operation, work, write=True)

    async def _read(self, operation: str, work: Callable[[Connection], _R]) -> _R:
        return await self._runner.run(operation, work, write=False)

    def _row(self, table: Table, obj: Any, **extra: Any) -> dict[str, Any]:
        values = {f.name: getattr(obj, f.name) for f in fields(obj)}
        return checked(table, {"exchange": self._exchange, **values, **extra})

    def _keys(self, symbol: str) -> dict[str, Any]:
        return {"k_exchange": self._exchange, "k_symbol": symbol}

    # lifecycle

    async def start(self) -> None:
        """Connect and bring the schema to this version's migration head (``auto_migrate``),
        or check it is there. Any failure is a ``StartupError`` naming the database."""
        try:
            if self._dialect == "mysql":
                await self._read("check_server", check_server)
            if self._auto_migrate:
                await self._write("migrate", migrate.upgrade)
            else:
                current = await self._read("schema_version", migrate.current_revision)
                head = migrate.head_revision()
                if current != head:
                    raise StartupError(
                        f"the database schema is at revision {current or 'none'}, this version "
                        f"needs {head}: run `quantmesh db upgrade` or set database.auto_migrate"
                    )
        except StorageError as exc:
            where = self._engine.url.render_as_string(hide_password=True)
            raise StartupError(
                f"cannot use the {self._dialect} database {where}: {exc}; check database.dsn "
                "and that the server is running"
            ) from exc
        log.info("storage_started", exchange=self._exchange, dialect=self._dialect)

    async def close(self) -> None:
        await self._runner.close()

    def durability(self) -> DurabilityReport | None:
        """``None``: no write buffer; a write is stored when it returns, or fails."""
        return None

    async def replayed(self) -> bool:
        return False  # nothing is ever buffered here

    # orders

    async def save_order(self, order: Order) -> None:
        await self.save_orders([order])

    async def save_orders(self, orders: Sequence[Order]) -> None:
        """Insert new orders, merge updates into stored ones (see ``merge_order``)."""
        if orders:
            rows = [self._row(models.orders, order) for order in orders]
            await self._write("save_orders", lambda conn: self._save_orders(conn, orders, rows))

    def _save_orders(
        self, conn: Connection, orders: Sequence[Order], rows: list[dict[str, Any]]
    ) -> None:
        """Read the stored orders (locked), insert the missing, update the changed."""
        batches: dict[str, list[Order]] = {}
        firsts: dict[str, dict[str, Any]] = {}
        for order, row in zip(orders, rows, strict=True):
            batches.setdefault(order.client_order_id, []).append(order)
            firsts.setdefault(order.client_order_id, row)
        stored = self._orders_by_id(conn, list(batches), for_update=True)
        missing = [cid for cid in batches if cid not in stored]
        if missing:
            self._insert_orders.execute_many(conn, [firsts[cid] for cid in missing])
            if self._inserts_are_exclusive:  # stored as the batch's first update
                stored.update((cid, batches[cid][0]) for cid in missing)
            else:  # another instance may have stored some first: merge into those
                stored.update(self._orders_by_id(conn, missing, for_update=True))
        changes = []
        for client_order_id, batch in batches.items():
            before = stored.get(client_order_id)
            if before is None:
                raise StorageError(f"order {client_order_id} vanished while saving it")
            after = before
            for incoming in batch:
                after = merge_order(after, incoming)
                if incoming.status == "open" and after is not incoming and after.status != "open":
                    log.debug("stale_order_update_ignored", client_order_id=client_order_id)
            if after != before:
                changes.append(
                    {
                        "k_exchange": self._exchange,
                        "k_client_order_id": client_order_id,
                        "v_status": after.status,
                        "v_filled": after.filled,
                        "v_exchange_order_id": after.exchange_order_id,
                        "v_price": after.price,
                        "v_amount": after.amount,
                        "v_created_at": after.created_at,
                        "v_updated_at": after.updated_at,
                    }
                )
        if changes:
            self._update_orders.execute_many(conn, changes)

    async def get_order(self, client_order_id: str) -> Order | None:
        def read(conn: Connection) -> Order | None:
            found = self._orders_by_id(conn, [client_order_id], for_update=False)
            return found.get(client_order_id)

        return await self._read("get_order", read)

    async def last_order_time(self, symbol: str) -> float | None:
        def read(conn: Connection) -> float | None:
            value = conn.scalar(statements.LAST_ORDER_TIME, self._keys(symbol))
            return None if value is None else float(value)

        return await self._read("last_order_time", read)

    async def get_open_orders(self, symbol: str) -> list[Order]:
        def read(conn: Connection) -> list[Order]:
            return [
                from_row(Order, row)
                for row in conn.execute(statements.OPEN_ORDERS, self._keys(symbol))
            ]

        return await self._read("get_open_orders", read)

    def _orders_by_id(
        self, conn: Connection, ids: Sequence[str], *, for_update: bool
    ) -> dict[str, Order]:
        stmt = statements.ORDERS_BY_ID_FOR_UPDATE if for_update else statements.ORDERS_BY_ID
        found: dict[str, Order] = {}
        for chunk in chunks(ids):
            for row in conn.execute(stmt, {"k_exchange": self._exchange, "k_ids": chunk}):
                found[row.client_order_id] = from_row(Order, row)
        return found

    # fills

    async def save_fill(self, fill: Fill) -> None:
        await self.save_fills([fill])

    async def save_fills(self, fills: Sequence[Fill]) -> None:
        """Insert fills not stored yet; a fill seen before is left as it is.

        No grid level is written with them, so new ones are stored as not applied to their
        level (``unapplied_order_ids``); a fill stored applied stays applied.
        """
        columns = self._fill_columns(fills, applied=False)
        if columns:
            await self._write("save_fills", lambda conn: self._insert_trades.execute(conn, columns))

    def _fill_columns(self, fills: Sequence[Fill], *, applied: bool) -> list[Sequence[Any]]:
        """The trades rows of ``fills`` (the first of each trade id), a sequence per column
        of the fill statements; empty without fills."""
        if not fills:
            return []
        keys = list(map(_TRADE_KEY, fills))
        if len(set(keys)) < len(keys):
            unique: dict[tuple[str, str], Fill] = {}
            for key, fill in zip(keys, fills, strict=True):
                unique.setdefault(key, fill)
            fills = list(unique.values())
        constants = {"exchange": self._exchange, "level_applied": applied}
        return self._trade_columns.values(fills, constants)

    async def known_trade_ids(self, symbol: str, trade_ids: Sequence[str]) -> set[str]:
        """Which of ``trade_ids`` are stored together with their effect on the grid level.

        A fill stored without its level (``unapplied_order_ids``) is not known: its owner
        must apply it again.
        """
        ids = list(dict.fromkeys(trade_ids))
        if not ids:
            return set()

        def read(conn: Connection) -> set[str]:
            known: set[str] = set()
            for chunk in chunks(ids):
                params = {**self._keys(symbol), "k_ids": chunk}
                known.update(conn.scalars(statements.APPLIED_TRADE_IDS, params))
            return known

        return await self._read("known_trade_ids", read)

    async def unapplied_order_ids(self, symbol: str) -> list[str]:
        """Client order ids of ``symbol`` with fills stored without their effect on the
        grid level, the order of the oldest such fill first."""

        def read(conn: Connection) -> list[str]:
            return list(conn.scalars(statements.UNAPPLIED_ORDER_IDS, self._keys(symbol)))

        return await self._read("unapplied_order_ids", read)

    async def get_trades(self, flt: TradeFilter) -> list[Fill]:
        """Fills of this exchange matching ``flt``, oldest first (by ts, then insertion).

        ``since`` is inclusive, ``until`` exclusive.
        """
        if flt.limit < 0 or flt.offset < 0:
            raise ValueError("limit and offset must not be negative")
        trades = models.trades
        stmt = select(trades).where(trades.c.exchange == self._exchange)
        if flt.symbol is not None:
            stmt = stmt.where(trades.c.symbol == flt.symbol)
        if flt.side is not None:
            stmt = stmt.where(trades.c.side == flt.side)
        if flt.client_order_id is not None:
            stmt = stmt.where(trades.c.client_order_id == flt.client_order_id)
        if flt.since is not None:
            stmt = stmt.where(trades.c.ts >= flt.since)
        if flt.until is not None:
            stmt = stmt.where(trades.c.ts < flt.until)
        stmt = stmt.order_by(trades.c.ts, trades.c.id).limit(flt.limit).offset(flt.offset)
        return await self._read(
            "get_trades", lambda conn: [from_row(Fill, row) for row in conn.execute(stmt)]
        )

    # round trips

    async def save_round_trip(self, trip: RoundTrip) -> None:
        await self.save_round_trips([trip])

    async def save_round_trips(self, trips: Sequence[RoundTrip]) -> None:
        """Insert round trips not stored yet (keyed on symbol, level, cycle)."""
        rows = self._round_trip_rows(trips)
        if rows:
            await self._write(
                "save_round_trips", lambda conn: self._insert_round_trips.execute_many(conn, rows)
            )

    def _round_trip_rows(self, trips: Sequence[RoundTrip]) -> list[dict[str, Any]]:
        unique: dict[tuple[str, int, int], RoundTrip] = {}
        for trip in trips:
            unique.setdefault((trip.symbol, trip.level, trip.cycle), trip)
        return [self._row(models.round_trips, trip) for trip in unique.values()]

    async def get_round_trips(self, symbol: str) -> list[RoundTrip]:
        def read(conn: Connection) -> list[RoundTrip]:
            rows = conn.execute(statements.ROUND_TRIPS, self._keys(symbol))
            return [from_row(RoundTrip, row) for row in rows]

        return await self._read("get_round_trips", read)

    # grid state

    async def init_grid(
        self, symbol: str, anchor: Decimal, shape: GridShape | None = None
    ) -> GridState:
        row = checked(
            models.grids,
            {
                "exchange": self._exchange,
                "symbol": symbol,
                "anchor": anchor,
                "spacing": shape.spacing if shape is not None else None,
                "interval": shape.interval if shape is not None else None,
                "fence": 0,
                "last_price": None,
                "last_price_at": None,
                "updated_at": self._clock(),
            },
        )

        def write(conn: Connection) -> GridState | None:
            conn.execute(self._insert_grid, [row])
            return self._load_grid(conn, symbol)

        grid = await self._write("init_grid", write)
        if grid is None:
            raise StorageError(f"grid {symbol} on {self._exchange} vanished after creating it")
        if grid.anchor != anchor:
            log.info("grid_anchor_kept", symbol=symbol, stored=str(grid.anchor), asked=str(anchor))
        return grid

    async def load_grid(self, symbol: str) -> GridState | None:
        return await self._read("load_grid", lambda conn: self._load_grid(conn, symbol))

    def _load_grid(self, conn: Connection, symbol: str) -> GridState | None:
        keys = self._keys(symbol)
        head = conn.execute(statements.GRID_HEAD, keys).one_or_none()
        if head is None:
            return None
        shape = None
        if head.spacing is not None and head.interval is not None:
            shape = GridShape(head.spacing, head.interval)
        state = GridState(symbol=symbol, anchor=head.anchor, fence=head.fence, shape=shape)
        for row in conn.execute(statements.GRID_LEVELS, keys):
            # set_level leaves default levels out, as GridState requires
            state.set_level(LevelState(row.level_index, row.holding, row.cost, row.cycle))
        return state

    async def set_grid_shape(self, symbol: str, shape: GridShape, fence: int) -> bool:
        now = self._clock()
        checked(models.grids, {"spacing": shape.spacing, "interval": shape.interval})
        params = {**self._keys(symbol), "v_spacing": shape.spacing, "v_interval": shape.interval}

        def write(conn: Connection) -> bool:
            if not self._claim_fence(conn, symbol, fence, now):
                return False
            conn.execute(statements.GRID_SHAPE, params)
            return True

        return await self._write("set_grid_shape", write)

    async def save_levels(self, symbol: str, levels: Sequence[LevelState], fence: int) -> bool:
        """Compare-and-set the grid's fence, then upsert ``levels``, in one transaction."""
        rows = self._level_rows(symbol, levels)
        now = self._clock()

        def write(conn: Connection) -> bool:
            if not self._claim_fence(conn, symbol, fence, now):
                return False
            if rows:
                self._upsert_levels.execute_many(conn, rows)
            return True

        return await self._write("save_levels", write)

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
        return await self.record_batch(
            order.symbol, [order], fills, levels, round_trips, fence, operation="record_execution"
        )

    async def record_batch(
        self,
        symbol: str,
        orders: Sequence[Order],
        fills: Sequence[Fill],
        levels: Sequence[LevelState],
        round_trips: Sequence[RoundTrip],
        fence: int | None,
        *,
        operation: str = "record_batch",
    ) -> bool:
        """Several executions of one symbol in one transaction (the write buffer's replay).

        Order updates apply in sequence, fills and round trips already stored are ignored,
        the last state of each level wins. With a ``fence``, nothing is written (``False``)
        when a newer one is stored; otherwise the fills are stored as applied to their
        levels (a fill stored earlier without its level becomes applied).
        ``fence=None`` writes no levels and claims nothing: the fills it stores are not
        applied to their levels (``unapplied_order_ids``), and one stored applied stays so.
        """
        applied = fence is not None
        order_rows = [self._row(models.orders, order) for order in orders]
        fill_columns = self._fill_columns(fills, applied=applied)
        insert_trades = self._insert_applied_trades if applied else self._insert_trades
        trip_rows = self._round_trip_rows(round_trips)
        level_rows = self._level_rows(symbol, levels) if fence is not None else []
        now = self._clock()

        def write(conn: Connection) -> bool:
            if fence is not None and not self._claim_fence(conn, symbol, fence, now):
                return False
            trades = (insert_trades, fill_columns)
            self._store_records(conn, orders, order_rows, trades, trip_rows, level_rows)
            return True

        return await self._write(operation, write)

    async def record_batches(self, batches: Sequence[ExecutionBatch]) -> list[bool]:
        """Batches of several symbols in one transaction; see ``Repository``.

        The fences are claimed first, in symbol order (two instances' transactions take
        the grid rows in the same order), then the claimed batches are written together,
        a statement per table. Raises ``ValueError`` for a symbol given twice.
        """
        if len({b.symbol for b in batches}) < len(batches):
            raise ValueError("record_batches takes one batch per symbol")
        order_rows = [[self._row(models.orders, o) for o in b.orders] for b in batches]
        fill_columns = [self._fill_columns(b.fills, applied=True) for b in batches]
        trip_rows = [self._round_trip_rows(b.round_trips) for b in batches]
        level_rows = [self._level_rows(b.symbol, b.levels) for b in batches]
        now = self._clock()

        def write(conn: Connection) -> list[bool]:
            stale = {
                b.symbol
                for b in sorted(batches, key=_SYMBOL)
                if not self._claim_fence(conn, b.symbol, b.fence, now)
            }
            kept = [i for i, b in enumerate(batches) if b.symbol not in stale]
            # a column per name, each the batches' columns end to end (no trade id is in
            # two batches: a trade's key holds its symbol)
            fills = [
                list(chain(*cs))
                for cs in zip(*(fill_columns[i] for i in kept if fill_columns[i]), strict=True)
            ]
            self._store_records(
                conn,
                [o for i in kept for o in batches[i].orders],
                [row for i in kept for row in order_rows[i]],
                (self._insert_applied_trades, fills),
                [row for i in kept for row in trip_rows[i]],
                [row for i in kept for row in level_rows[i]],
            )
            return [b.symbol not in stale for b in batches]

        return await self._write("record_batches", write)

    def _store_records(
        self,
        conn: Connection,
        orders: Sequence[Order],
        order_rows: list[dict[str, Any]],
        trades: tuple[BulkUpsert, Sequence[Sequence[Any]]],
        trip_rows: list[dict[str, Any]],
        level_rows: list[dict[str, Any]],
    ) -> None:
        """The records of executions whose fences are claimed: orders, fills (``trades``:
        the statement and the fills' columns), round trips, levels."""
        if orders:
            self._save_orders(conn, orders, order_rows)
        insert_trades, fill_columns = trades
        if fill_columns:
            insert_trades.execute(conn, fill_columns)
        if trip_rows:
            self._insert_round_trips.execute_many(conn, trip_rows)
        if level_rows:
            self._upsert_levels.execute_many(conn, level_rows)

    def _level_rows(self, symbol: str, levels: Sequence[LevelState]) -> list[dict[str, Any]]:
        unique = {level.index: level for level in levels}  # the last state of a level wins
        return [
            checked(
                models.grid_levels,
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

    def _claim_fence(self, conn: Connection, symbol: str, fence: int, now: float) -> bool:
        """Store ``fence`` unless a newer one is stored; ``False`` when it is."""
        keys = self._keys(symbol)
        claim = {**keys, "k_fence": fence, "v_fence": fence, "v_updated_at": now}
        # MySQL reports matched rather than changed rows: SQLAlchemy sets FOUND_ROWS
        if self._claim.execute(conn, claim).rowcount > 0:
            return True
        stored = conn.scalar(statements.GRID_FENCE, keys)
        if stored is None:
            raise StorageError(f"grid {symbol} on {self._exchange} is not initialised")
        log.warning("grid_write_fenced", symbol=symbol, fence=fence, stored_fence=stored)
        return False

    async def save_last_price(self, symbol: str, price: Decimal, ts: float) -> None:
        checked(models.grids, {"last_price": price, "last_price_at": ts})
        params = {**self._keys(symbol), "v_last_price": price, "v_last_price_at": ts}

        def write(conn: Connection) -> int:
            return conn.execute(statements.LAST_PRICE, params).rowcount

        if await self._write("save_last_price", write) == 0:
            log.warning("last_price_for_unknown_grid", symbol=symbol)

    # status

    async def summaries(self) -> list[SymbolSummary]:
        return await self._read("summaries", self._summaries)

    def _summaries(self, conn: Connection) -> list[SymbolSummary]:
        heads = conn.execute(
            statements.GRID_HEADS.order_by(models.grids.c.exchange, models.grids.c.symbol)
        ).all()
        inventory = self._sums(conn, models.grid_levels.c.holding)
        pnl = self._sums(conn, models.round_trips.c.pnl)
        open_orders = {(r[0], r[1]): int(r[2]) for r in conn.execute(statements.OPEN_COUNTS)}
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

    def _sums(
        self, conn: Connection, column: Column[Any]
    ) -> dict[tuple[str, str], tuple[Decimal, int]]:
        """Exact per-(exchange, symbol) sum and row count of a decimal column."""
        table = column.table
        keys = (table.c.exchange, table.c.symbol)
        totals: dict[tuple[str, str], tuple[Decimal, int]] = {}
        if self._dialect == "sqlite":  # decimals are text there: add them up here
            for exchange, symbol, value in conn.execute(select(*keys, column)):
                total, count = totals.get((exchange, symbol), (Decimal(0), 0))
                totals[(exchange, symbol)] = (statements.EXACT.add(total, value), count + 1)
            return totals
        stmt = select(*keys, func.sum(column), func.count()).group_by(*keys)
        for exchange, symbol, total, count in conn.execute(stmt):
            totals[(exchange, symbol)] = (Decimal(total), int(count))
        return totals
