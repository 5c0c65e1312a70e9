"""Metrics read at scrape time from the running components, instead of updated on events.

A price's age grows while nothing happens, so it is computed when Prometheus asks; the
stream reconnect counts live in the exchange adapter, which knows nothing of metrics; so
does the exchange's clock offset (``bind_exchange_clock``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from quantmesh.domain import ClockOffset
from quantmesh.observability.metrics import Metrics
from quantmesh.observability.status import TraderView

ReconnectCounts = Callable[[], Mapping[tuple[str, str], int]]
ClockReading = Callable[[], ClockOffset | None]


def bind_exchange_clock(metrics: Metrics, exchange: str, clock_offset: ClockReading) -> None:
    """``quantmesh_exchange_clock_offset_seconds{exchange}`` and its uncertainty read
    ``clock_offset()`` (``Exchange.clock_offset``) at scrape time; NaN while it is not
    measured (before the first measurement, or an exchange that shares our clock)."""

    def read(field: str) -> Callable[[], float]:
        def value() -> float:
            offset = clock_offset()
            return math.nan if offset is None else float(getattr(offset, field))

        return value

    metrics.exchange_clock_offset.labels(exchange).set_function(read("offset"))
    metrics.exchange_clock_uncertainty.labels(exchange).set_function(read("uncertainty"))


class ServiceCollector(Collector):
    def __init__(
        self, traders: Sequence[TraderView], reconnects: ReconnectCounts | None = None
    ) -> None:
        self._traders = traders
        self._reconnects = reconnects

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "quantmesh_price_age_seconds",
            "Seconds since the symbol's last price (absent before the first one)",
            labels=["symbol"],
        )
        for trader in self._traders:
            seconds = trader.price_age
            if seconds is not None:
                age.add_metric([trader.symbol], seconds)
        yield age
        unrealized = GaugeMetricFamily(
            "quantmesh_unrealized_pnl",
            "Unrealized PnL of the held inventory at the last price, in quote currency "
            "(what partial sells brought in counted; absent before a price)",
            labels=["symbol"],
        )
        average = GaugeMetricFamily(
            "quantmesh_inventory_average_cost",
            "Average cost of a unit of held inventory, fees in quote included (absent when "
            "nothing is held)",
            labels=["symbol"],
        )
        for trader in self._traders:
            held = trader.position
            if held is not None:
                unrealized.add_metric([trader.symbol], float(held.unrealized))
                if held.average_cost is not None:
                    average.add_metric([trader.symbol], float(held.average_cost))
        yield unrealized
        yield average
        reconnects = CounterMetricFamily(
            "quantmesh_ws_reconnects",
            "Exchange stream failures followed by a reconnect (or REST polling)",
            labels=["symbol", "stream"],
        )
        if self._reconnects is not None:
            for (symbol, stream), count in sorted(self._reconnects().items()):
                reconnects.add_metric([symbol, stream], count)
        yield reconnects
