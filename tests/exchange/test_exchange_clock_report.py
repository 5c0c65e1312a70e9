"""The exchange's clock offset as operators see it: the ``exchange_clock`` section of
``/api/status`` and the ``quantmesh_exchange_clock_*`` gauges, read at scrape time."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry

from quantmesh.domain import ClockOffset
from quantmesh.observability.collectors import bind_exchange_clock
from quantmesh.observability.metrics import Metrics
from quantmesh.observability.status import exchange_clock_status, service_status


def test_the_status_section_is_null_until_measured() -> None:
    assert exchange_clock_status(None) is None
    section = exchange_clock_status(ClockOffset(-0.01234567, 0.0021234, 1_700_000_000.12345))
    assert section == {"offset_s": -0.0123, "uncertainty_s": 0.0021, "measured_at": 1700000000.123}
    body = service_status({"instance": "a"}, [], {"exchange_clock": lambda: section})
    assert body["exchange_clock"]["offset_s"] == -0.0123


def test_the_gauges_follow_the_latest_measurement_at_scrape_time() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    current: list[ClockOffset | None] = [None]
    bind_exchange_clock(metrics, "binance", lambda: current[0])

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(name, {"exchange": "binance"})

    offset = gauge("quantmesh_exchange_clock_offset_seconds")
    assert offset is not None and math.isnan(offset)  # not measured yet
    current[0] = ClockOffset(0.25, 0.004, 1_700_000_000.0)
    assert gauge("quantmesh_exchange_clock_offset_seconds") == 0.25
    assert gauge("quantmesh_exchange_clock_uncertainty_seconds") == 0.004
    current[0] = ClockOffset(-1.5, 0.002, 1_700_000_060.0)
    assert gauge("quantmesh_exchange_clock_offset_seconds") == -1.5
