"""Metrics computed at scrape time."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from quantmesh.observability.collectors import ServiceCollector


@dataclass
class Priced:
    symbol: str
    price_age: float | None


def test_price_age_and_stream_reconnects_are_read_when_scraped() -> None:
    eth = Priced("ETH/USDT", 1.5)
    traders = [eth, Priced("BTC/USDT", None)]
    counts = {("ETH/USDT", "prices"): 2, ("ETH/USDT", "orders"): 0}
    registry = CollectorRegistry()
    registry.register(ServiceCollector(traders, lambda: counts))  # type: ignore[arg-type]

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("quantmesh_price_age_seconds", symbol="ETH/USDT") == 1.5
    assert sample("quantmesh_price_age_seconds", symbol="BTC/USDT") is None  # no price yet
    assert sample("quantmesh_ws_reconnects_total", symbol="ETH/USDT", stream="prices") == 2
    eth.price_age = 40.0
    counts[("ETH/USDT", "prices")] = 5
    assert sample("quantmesh_price_age_seconds", symbol="ETH/USDT") == 40.0
    assert sample("quantmesh_ws_reconnects_total", symbol="ETH/USDT", stream="prices") == 5


def test_without_an_exchange_that_streams_the_family_is_empty() -> None:
    registry = CollectorRegistry()
    registry.register(ServiceCollector([]))
    names = {m.name for m in registry.collect()}
    assert names == {"quantmesh_price_age_seconds", "quantmesh_ws_reconnects"}
    assert all(not m.samples for m in registry.collect())
