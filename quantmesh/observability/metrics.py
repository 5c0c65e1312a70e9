"""Prometheus metrics, with the seed's names for the lock and database families.

Labels are bounded: ``symbol`` and ``key`` (per symbol, ``order:binance:ETHUSDT``), never
a price, level or order id. The lock families add ``purpose`` (``order``, ``reconcile``,
``ownership``; see ``quantmesh.lock.metered``) to the seed's labels.
"""

from __future__ import annotations

from typing import Any, Self

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

# Order locks are held for milliseconds, the reconcile lock for seconds, an ownership
# lease for as long as the instance trades the symbol (hours, days).
_LOCK_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
    10, 30, 60, 300, 1800, 3600, 21600, 86400,
)  # fmt: skip


class _Children(MetricWrapperBase):
    """Children kept by the label values they were asked with.

    prometheus-client's ``labels`` converts and checks the values and takes the family's
    lock on every call (a few microseconds); the traders ask the same few children on every
    tick and fill, so each is looked up in a dict after its first call. No family here
    removes a child, so a kept child is never stale (``remove``/``clear`` forget them all
    anyway).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[tuple[object, ...], Self] = {}

    def labels(self, *values: object, **by_name: object) -> Self:
        if by_name:
            return super().labels(*values, **by_name)
        child = self._kept.get(values)
        if child is None:
            child = self._kept[values] = super().labels(*values)
        return child

    def remove(self, *values: object) -> None:
        self._kept.clear()
        super().remove(*values)

    def clear(self) -> None:
        self._kept.clear()
        super().clear()


class Counter(_Children, prometheus_client.Counter):
    pass


class Gauge(_Children, prometheus_client.Gauge):
    pass


class Histogram(_Children, prometheus_client.Histogram):
    pass


class Metrics:
    """Every metric QuantMesh exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        registry = self.registry
        self.lock_acquire = Counter(
            "quantmesh_lock_acquire_total",
            "Lock acquisition attempts by outcome (success, conflict, error, unavailable) "
            "and purpose (order, reconcile, ownership)",
            ["key", "status", "purpose"],
            registry=registry,
        )
        self.lock_conflict = Counter(
            "quantmesh_lock_conflict_total",
            "Lock attempts that found the lock held by another holder, by purpose",
            ["key", "purpose"],
            registry=registry,
        )
        self.lock_hold = Histogram(
            "quantmesh_lock_hold_duration_seconds",
            "How long a lease was held, from its grant to its release (or loss), by purpose",
            ["key", "purpose"],
            buckets=_LOCK_BUCKETS,
            registry=registry,
        )
        self.lock_backend_up = Gauge(
            "quantmesh_lock_backend_up",
            "1 while the distributed lock backend passes its health check, else 0",
            registry=registry,
        )
        self.lock_mode = Gauge(
            "quantmesh_lock_mode",
            "1 for the lock mode in force: distributed; halted (backend down, no orders); "
            "single_instance (backend down, local lock only)",
            ["mode"],
            registry=registry,
        )
        self.orders_placed = Counter(
            "quantmesh_orders_placed_total",
            "Orders accepted by the exchange",
            ["symbol", "side"],
            registry=registry,
        )
        self.orders_rejected = Counter(
            "quantmesh_orders_rejected_total",
            "Orders refused by the exchange, by reason",
            ["symbol", "reason"],
            registry=registry,
        )
        self.orders_skipped = Counter(
            "quantmesh_orders_skipped_total",
            "Orders the grid wanted but did not send (below minimums, position cap, bounds), "
            "counted per evaluation",
            ["symbol", "reason"],
            registry=registry,
        )
        self.orders_cancelled = Counter(
            "quantmesh_orders_cancelled_total",
            "Orders cancelled by reason",
            ["symbol", "reason"],
            registry=registry,
        )
        self.fills = Counter(
            "quantmesh_fills_total", "Fills received", ["symbol", "side"], registry=registry
        )
        self.fees = Counter(
            "quantmesh_fees_paid_total",
            "Fees paid on fills, in the currency they were charged in (BNB unconverted)",
            ["symbol", "currency"],
            registry=registry,
        )
        self.round_trips = Counter(
            "quantmesh_round_trips_total",
            "Completed buy-sell cycles",
            ["symbol"],
            registry=registry,
        )
        self.realized_pnl = Gauge(
            "quantmesh_realized_pnl",
            "Realized PnL in quote currency since start",
            ["symbol"],
            registry=registry,
        )
        self.inventory = Gauge(
            "quantmesh_inventory", "Base amount held by the grid", ["symbol"], registry=registry
        )
        self.open_orders = Gauge(
            "quantmesh_open_orders", "Open orders of the grid", ["symbol"], registry=registry
        )
        self.write_queue = Gauge(
            "quantmesh_db_write_queue",
            "Order and fill records the trader acted on that the database has not stored yet",
            ["symbol"],
            registry=registry,
        )
        self.last_price = Gauge(
            "quantmesh_last_price", "Last price seen", ["symbol"], registry=registry
        )
        self.last_price_ts = Gauge(
            "quantmesh_last_price_timestamp_seconds",
            "When the last price was seen",
            ["symbol"],
            registry=registry,
        )
        self.exchange_errors = Counter(
            "quantmesh_exchange_errors_total",
            "Exchange call failures by type",
            ["symbol", "error"],
            registry=registry,
        )
        self.trader_up = Gauge(
            "quantmesh_trader_up",
            "1 while the symbol's trader runs, 0 after it failed",
            ["symbol"],
            registry=registry,
        )
        # "id", not "instance": Prometheus sets "instance" to the scraped target.
        self.instance_info = Gauge(
            "quantmesh_instance_info",
            "Always 1; labelled with this instance's id and role (master or standby)",
            ["id", "role"],
            registry=registry,
        )
        self.symbol_owned = Gauge(
            "quantmesh_symbol_owned",
            "1 while this instance holds the symbol's ownership lease and trades it, else 0",
            ["symbol"],
            registry=registry,
        )
        self.symbol_paused = Gauge(
            "quantmesh_symbol_paused",
            "1 for the mode a person set on the symbol (paused, stop_buys, liquidate), else 0; "
            "paused with every order cancelled is mode cancel_all",
            ["symbol", "mode"],
            registry=registry,
        )
        self.risk_triggered = Gauge(
            "quantmesh_risk_triggered",
            "1 while a risk trigger holds the symbol (its action: stop_buys, halt or liquidate), "
            "until a person resumes it",
            ["symbol", "trigger", "action"],
            registry=registry,
        )
        self.ownership_changes = Counter(
            "quantmesh_ownership_changes_total",
            "Ownership events of this instance: acquired, released (clean hand-off or "
            "shutdown), lost (lease lapsed or taken over)",
            ["symbol", "event"],
            registry=registry,
        )
        self.failovers = Counter(
            "quantmesh_failovers_total",
            "Symbols this instance took over from an owner that lost its lease without "
            "releasing it (crashed, frozen or cut off)",
            ["symbol"],
            registry=registry,
        )
        self.fleet_members = Gauge(
            "quantmesh_fleet_members",
            "Live instances this instance sees in the fleet (membership heartbeats)",
            registry=registry,
        )
        self.exchange_clock_offset = Gauge(
            "quantmesh_exchange_clock_offset_seconds",
            "Exchange clock minus this host's clock, as last measured (positive: the "
            "exchange is ahead)",
            ["exchange"],
            registry=registry,
        )
        self.exchange_clock_uncertainty = Gauge(
            "quantmesh_exchange_clock_uncertainty_seconds",
            "Half the round trip of the last clock measurement: how far the offset may be off",
            ["exchange"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "quantmesh_config_reloads_total",
            "Reloads of the settings file: applied (the file was valid; what needs a "
            "restart is left out), refused (invalid: nothing changed)",
            ["result"],
            registry=registry,
        )
        self.open_orders_left = Gauge(
            "quantmesh_open_orders_left",
            "Orders still open after a shutdown with cancel_on_exit (0 after a clean one)",
            ["symbol"],
            registry=registry,
        )
        self.db = DbMetrics(registry)


# --- database (issue 4) -------------------------------------------------------------------

_DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class DbMetrics:
    """The database family: the seed's three names plus the write buffer's state.

    ``operation`` is a repository method name (bounded); ``error`` the kind of failure
    (``unavailable``, ``error``, ``deadlock``...), never a message.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "quantmesh_db_connections",
            "Pooled database connections by state (open, idle, in_use)",
            ["state"],
            registry=registry,
        )
        self.query_duration = Histogram(
            "quantmesh_db_query_duration_seconds",
            "Duration of one repository operation (one transaction), by operation",
            ["operation"],
            buckets=_DB_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "quantmesh_db_errors_total",
            "Failed repository operations by operation and kind of error",
            ["operation", "error"],
            registry=registry,
        )
        self.buffer_depth = Gauge(
            "quantmesh_db_buffer_depth",
            "Writes waiting in the write buffer for the database (memory and journal)",
            registry=registry,
        )
        self.buffer_memory = Gauge(
            "quantmesh_db_buffer_memory_records",
            "Writes of the buffer held in memory (bounded by database.buffer_size)",
            registry=registry,
        )
        self.journal_bytes = Gauge(
            "quantmesh_db_journal_bytes",
            "Size of the write buffer's journal file",
            registry=registry,
        )
        self.buffered = Counter(
            "quantmesh_db_buffered_total",
            "Writes that went to the write buffer because the database was unavailable",
            ["operation"],
            registry=registry,
        )
        self.replayed = Counter(
            "quantmesh_db_replayed_total",
            "Buffered writes the replay took off the buffer: stored, or dead-lettered if refused",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "quantmesh_db_dead_lettered_total",
            "Buffered writes the database refused for good, moved to the dead-letter file",
            registry=registry,
        )
