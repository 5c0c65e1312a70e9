"""``quantmesh run`` with the Redis lock: trades under locks, halts while Redis is down."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.cli.support import Daemon, changed, fast_config, sim_orders, write_config
from tests.servers.redis import RedisServer

PASSWORD = "daemon-pw-91c2"


def test_the_daemon_trades_under_redis_locks_halts_without_redis_and_recovers(
    tmp_path: Path,
) -> None:
    with RedisServer(password=PASSWORD) as redis:
        config = changed(
            fast_config(),
            {
                "distributed_lock": {"enabled": True, "health_check_interval": 0.2},
                "redis": {"addr": redis.addr, "password": "${REDIS_PASSWORD}",
                          "socket_timeout": 0.5, "connect_timeout": 0.5},
            },
        )  # fmt: skip
        path = write_config(tmp_path, config)
        with Daemon(path, tmp_path, env={"REDIS_PASSWORD": PASSWORD}) as daemon:
            assert daemon.wait_for("order_placed", 15), daemon.stderr[-3000:]
            assert redis.command("exists", "quantmesh:lock:{order:simulated:ETHUSDT}:fence") == "1"

            redis.kill()
            assert daemon.wait_for("lock_backend_down_halted", 10), daemon.stderr[-3000:]
            time.sleep(0.3)  # calls already on their way finish
            placed = len(sim_orders(tmp_path / "data" / "sim-exchange.db"))
            time.sleep(1.5)  # the price keeps moving: nothing may be placed
            assert len(sim_orders(tmp_path / "data" / "sim-exchange.db")) == placed
            # ... although the trader wanted to: its lock calls were refused (logged once per
            # symbol per interval, with whichever refusal came first: the closed port, or
            # the halt)
            assert daemon.wait_for("lock_unavailable", 5), daemon.stderr[-3000:]

            redis.start()
            assert daemon.wait_for("lock_backend_recovered", 10), daemon.stderr[-3000:]
            code, _ = daemon.stop(signal.SIGINT, 10)
        assert code == 0, daemon.stderr[-3000:]
        assert PASSWORD not in daemon.stderr
        assert "Traceback" not in daemon.stderr
