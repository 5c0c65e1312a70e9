"""The seed's lock metrics of an instance as ``quantmesh.wiring`` builds it: its level
locks (``order``), reconcile lock and ownership leases each counted under their purpose,
on every lock server."""

from __future__ import annotations

from decimal import Decimal

from quantmesh.exchange.sim.simulated import SimulatedExchange
from tests.trading.support import until

from .conftest import FleetServer
from .support import Instances

KEY = "order:simulated:ETHUSDT"


async def test_a_running_instance_records_its_lock_metrics(
    instances: Instances, fleet_server: FleetServer
) -> None:
    a = instances.start("a", fleet_server.port, reconcile_interval=0.2)
    await until(lambda: a.trading() == {"ETH/USDT"})

    def acquired(purpose: str) -> float:
        return a.sample("quantmesh_lock_acquire_total", key=KEY, status="success", purpose=purpose)

    exchange = a.service.exchange
    assert isinstance(exchange, SimulatedExchange)
    exchange.set_price("ETH/USDT", Decimal(2001))  # a price: the first buys are placed
    await until(lambda: acquired("order") >= 1)
    assert acquired("ownership") == 1
    await until(lambda: acquired("reconcile") >= 1)  # the periodic reconcile
    await a.close()  # the ownership lease is released: its hold time is observed
    held = a.sample("quantmesh_lock_hold_duration_seconds_count", key=KEY, purpose="ownership")
    assert held == 1
