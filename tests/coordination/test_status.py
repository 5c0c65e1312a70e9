"""``quantmesh status`` with a fleet: which live instance owns each symbol now."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantmesh.cli.status import read_status
from quantmesh.config import Settings, parse_settings
from tests.servers.redis import RedisServer
from tests.trading.support import until

from .support import Instances


def settings_for(tmp_path: Path, redis_port: int, fallback_mode: str = "halt") -> Settings:
    text = f"""
instance: {{id: reader}}
database: {{type: sqlite, dsn: "{tmp_path / "a" / "quantmesh.db"}"}}
distributed_lock: {{enabled: true, fallback_mode: {fallback_mode}}}
redis: {{addr: "127.0.0.1:{redis_port}"}}
trading:
  symbols:
    - {{symbol: ETHUSDT, price_interval: 10, order_quantity: 30,
       buy_window_size: 3, sell_window_size: 3}}
"""
    return parse_settings(text)


@pytest.mark.parametrize("fallback_mode", ["halt", "single_instance"])
async def test_status_names_the_owner_and_the_live_instances(
    tmp_path: Path,
    redis_server: RedisServer,
    redis: object,
    instances: Instances,
    fallback_mode: str,
) -> None:
    a = instances.start("a", redis_server.port, fallback_mode=fallback_mode)
    await until(lambda: a.trading() == {"ETH/USDT"})
    settings = settings_for(tmp_path, redis_server.port, fallback_mode)
    rows, notes = await read_status(settings)
    assert rows[0][-1] == "OWNER"
    assert [row[1] for row in rows[1:]] == ["ETH/USDT"] and rows[1][-1] == "a"
    assert notes == ["live instances: a (master)"]
    await a.close()
    rows, notes = await read_status(settings)
    assert rows[1][-1] == "-"  # released on the way out, and a is gone
    assert notes == ["live instances: none"]


async def test_status_without_redis_says_the_owners_are_unknown(
    tmp_path: Path, redis_server: RedisServer, redis: object, instances: Instances
) -> None:
    a = instances.start("a", redis_server.port)
    await until(lambda: a.trading() == {"ETH/USDT"})
    await a.close()
    settings = settings_for(tmp_path, 1)  # nothing listens on port 1
    rows, notes = await read_status(settings)
    assert rows[1][-1] == "?"
    assert len(notes) == 1 and notes[0].startswith("owners unknown: redis fleet failed")
