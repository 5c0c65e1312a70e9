"""Metrics read at scrape time from the running components, instead of updated on events.

A price's age grows while nothing happens, so it is computed when Prometheus asks; the
stream reconnect counts live in the exchange adapter, which knows nothing of metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from quantmesh.observability.status import TraderView

ReconnectCounts = Callable[[], Mapping[tuple[str, str], int]]


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
        reconnects = CounterMetricFamily(
            "quantmesh_ws_reconnects",
            "Exchange stream failures followed by a reconnect (or REST polling)",
            labels=["symbol", "stream"],
        )
        if self._reconnects is not None:
            for (symbol, stream), count in sorted(self._reconnects().items()):
                reconnects.add_metric([symbol, stream], count)
        yield reconnects
