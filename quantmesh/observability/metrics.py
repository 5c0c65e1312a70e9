"""Prometheus metrics, with the seed's names for the lock and database families.

Labels are bounded: ``symbol`` and ``key`` (per symbol, ``order:binance:ETHUSDT``), never
a price, level or order id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LOCK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Every metric QuantMesh exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.lock_acquire = Counter(
            "quantmesh_lock_acquire_total",
            "Lock acquisition attempts by outcome",
            ["key", "status"],
            registry=r,
        )
        self.lock_conflict = Counter(
            "quantmesh_lock_conflict_total",
            "Lock attempts that found the lock held by another holder",
            ["key"],
            registry=r,
        )
        self.lock_hold = Histogram(
            "quantmesh_lock_hold_duration_seconds",
            "How long a lock was held",
            ["key"],
            buckets=_LOCK_BUCKETS,
            registry=r,
        )
        self.orders_placed = Counter(
            "quantmesh_orders_placed_total",
            "Orders accepted by the exchange",
            ["symbol", "side"],
            registry=r,
        )
        self.orders_rejected = Counter(
            "quantmesh_orders_rejected_total",
            "Orders refused by the exchange, by reason",
            ["symbol", "reason"],
            registry=r,
        )
        self.orders_skipped = Counter(
            "quantmesh_orders_skipped_total",
            "Orders the grid wanted but did not send (below minimums, position cap, bounds), "
            "counted per evaluation",
            ["symbol", "reason"],
            registry=r,
        )
        self.orders_cancelled = Counter(
            "quantmesh_orders_cancelled_total",
            "Orders cancelled by reason",
            ["symbol", "reason"],
            registry=r,
        )
        self.fills = Counter(
            "quantmesh_fills_total", "Fills received", ["symbol", "side"], registry=r
        )
        self.round_trips = Counter(
            "quantmesh_round_trips_total", "Completed buy-sell cycles", ["symbol"], registry=r
        )
        self.realized_pnl = Gauge(
            "quantmesh_realized_pnl",
            "Realized PnL in quote currency since start",
            ["symbol"],
            registry=r,
        )
        self.inventory = Gauge(
            "quantmesh_inventory", "Base amount held by the grid", ["symbol"], registry=r
        )
        self.open_orders = Gauge(
            "quantmesh_open_orders", "Open orders of the grid", ["symbol"], registry=r
        )
        self.last_price = Gauge("quantmesh_last_price", "Last price seen", ["symbol"], registry=r)
        self.last_price_ts = Gauge(
            "quantmesh_last_price_timestamp_seconds",
            "When the last price was seen",
            ["symbol"],
            registry=r,
        )
        self.exchange_errors = Counter(
            "quantmesh_exchange_errors_total",
            "Exchange call failures by type",
            ["symbol", "error"],
            registry=r,
        )
        self.trader_up = Gauge(
            "quantmesh_trader_up",
            "1 while the symbol's trader runs, 0 after it failed",
            ["symbol"],
            registry=r,
        )
