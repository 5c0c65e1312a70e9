"""``quantmesh status`` with a fleet: which live instance owns each symbol now, read from
the lock server (Redis and etcd: each test runs on both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantmesh.cli.status import read_status
from quantmesh.config import Settings, parse_settings
from tests.trading.support import until

from .conftest import FleetServer
from .support import Instances, server_settings


def settings_for(tmp_path: Path, kind: str, port: int, fallback_mode: str = "halt") -> Settings:
    text = f"""
instance: {{id: reader}}
database: {{type: sqlite, dsn: "{tmp_path / "a" / "quantmesh.db"}"}}
distributed_lock: {{enabled: true, type: {kind}, fallback_mode: {fallback_mode}}}
{server_settings(kind, port)}
trading:
  symbols:
    - {{symbol: ETHUSDT, price_interval: 10, order_quantity: 30,
       buy_window_size: 3, sell_window_size: 3}}
"""
    return parse_settings(text)


@pytest.mark.parametrize("fallback_mode", ["halt", "single_instance"])
async def test_status_names_the_owner_and_the_live_instances(
    tmp_path: Path,
    fleet_server: FleetServer,
    instances: Instances,
    fallback_mode: str,
) -> None:
    a = instances.start("a", fleet_server.port, fallback_mode=fallback_mode)
    await until(lambda: a.trading() == {"ETH/USDT"})
    settings = settings_for(tmp_path, fleet_server.kind, fleet_server.port, fallback_mode)
    rows, notes = await read_status(settings)
    assert rows[0][-1] == "OWNER"
    assert [row[1] for row in rows[1:]] == ["ETH/USDT"] and rows[1][-1] == "a"
    assert notes == ["live instances: a (master)"]
    await a.close()
    rows, notes = await read_status(settings)
    assert rows[1][-1] == "-"  # released on the way out, and a is gone
    assert notes == ["live instances: none"]


async def test_status_without_the_lock_server_says_the_owners_are_unknown(
    tmp_path: Path, fleet_server: FleetServer, instances: Instances
) -> None:
    a = instances.start("a", fleet_server.port)
    await until(lambda: a.trading() == {"ETH/USDT"})
    await a.close()
    settings = settings_for(tmp_path, fleet_server.kind, 1)  # nothing listens on port 1
    rows, notes = await read_status(settings)
    assert rows[1][-1] == "?"
    assert len(notes) == 1 and notes[0].startswith(f"owners unknown: {fleet_server.kind} fleet")
