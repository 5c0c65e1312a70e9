"""The metric families keep their children: the same child for the same label values."""

from __future__ import annotations

from prometheus_client import generate_latest

from quantmesh.observability.metrics import Metrics


def test_a_child_is_kept_and_counts_in_the_exposition() -> None:
    metrics = Metrics()
    first = metrics.fills.labels("ETH/USDT", "buy")
    assert metrics.fills.labels("ETH/USDT", "buy") is first
    assert metrics.fills.labels(symbol="ETH/USDT", side="buy") is first  # by name: the same
    metrics.fills.labels("ETH/USDT", "buy").inc()
    metrics.fills.labels("ETH/USDT", "sell").inc(2)
    text = generate_latest(metrics.registry).decode()
    assert 'quantmesh_fills_total{side="buy",symbol="ETH/USDT"} 1.0' in text
    assert 'quantmesh_fills_total{side="sell",symbol="ETH/USDT"} 2.0' in text


def test_a_removed_child_is_not_kept() -> None:
    metrics = Metrics()
    gauge = metrics.last_price.labels("ETH/USDT")
    gauge.set(2000.5)
    metrics.last_price.remove("ETH/USDT")
    assert "2000.5" not in generate_latest(metrics.registry).decode()
    fresh = metrics.last_price.labels("ETH/USDT")
    assert fresh is not gauge
    metrics.last_price.clear()
    assert metrics.last_price.labels("ETH/USDT") is not fresh


def test_histogram_children_observe() -> None:
    metrics = Metrics()
    hold = metrics.lock_hold.labels("order:sim:ETHUSDT", "order")
    assert metrics.lock_hold.labels("order:sim:ETHUSDT", "order") is hold
    hold.observe(0.002)
    text = generate_latest(metrics.registry).decode()
    assert (
        'quantmesh_lock_hold_duration_seconds_count{key="order:sim:ETHUSDT",purpose="order"} 1.0'
        in text
    )
