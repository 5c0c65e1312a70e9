"""Metrics computed at scrape time."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from quantmesh.grid.pnl import Position, position
from quantmesh.grid.state import LevelState
from quantmesh.observability.collectors import ServiceCollector


@dataclass
class Priced:
    symbol: str
    price_age: float | None
    position: Position | None = None


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
    assert names == {
        "quantmesh_price_age_seconds",
        "quantmesh_ws_reconnects",
        "quantmesh_unrealized_pnl",
        "quantmesh_inventory_average_cost",
    }
    assert all(not m.samples for m in registry.collect())


def test_unrealized_pnl_and_average_cost_follow_the_position_when_scraped() -> None:
    held = LevelState(-1, holding=Decimal("0.02"), cost=Decimal("59.8"), cycle=1)
    eth = Priced("ETH/USDT", 1.0, position([held], {}, Decimal("3000.5")))
    flat = Priced("BTC/USDT", 1.0, position([], {}, Decimal(60000)))
    registry = CollectorRegistry()
    registry.register(ServiceCollector([eth, flat, Priced("SOL/USDT", None)]))  # type: ignore[list-item]

    def sample(name: str, symbol: str) -> float | None:
        return registry.get_sample_value(name, {"symbol": symbol})

    assert sample("quantmesh_unrealized_pnl", "ETH/USDT") == pytest.approx(0.21)
    assert sample("quantmesh_inventory_average_cost", "ETH/USDT") == 2990.0
    assert sample("quantmesh_unrealized_pnl", "BTC/USDT") == 0.0
    assert sample("quantmesh_inventory_average_cost", "BTC/USDT") is None  # nothing held
    assert sample("quantmesh_unrealized_pnl", "SOL/USDT") is None  # no price yet
    eth.position = position([held], {}, Decimal(2900))
    assert sample("quantmesh_unrealized_pnl", "ETH/USDT") == pytest.approx(-1.8)
