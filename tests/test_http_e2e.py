"""A running daemon's HTTP endpoints: readiness follows the traders, ``/metrics`` passes
``promtool check metrics``, ``/api/status`` shows each symbol."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.cli.support import Daemon, changed, fast_config, write_config
from tests.servers.base import require_binary


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _port(daemon: Daemon) -> int:
    events = daemon.wait_for("http_listening", 15)
    assert events, daemon.stderr
    port: int = events[0]["port"]
    return port


def _wait_ready(base: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = _get(f"{base}/readyz")
        if status == 200 or time.monotonic() > deadline:
            return {"status": status, **json.loads(body)}
        time.sleep(0.2)


def test_daemon_serves_metrics_readiness_and_status(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    config = changed(
        fast_config(),
        {"http": {"enabled": True, "host": "127.0.0.1", "port": 0, "token": "${QM_TOKEN}"}},
    )
    path = write_config(tmp_path, config)
    env = {"QM_TOKEN": "tok-7f3a9c2e"}
    with Daemon(path, tmp_path, env) as daemon:
        base = f"http://127.0.0.1:{_port(daemon)}"
        assert _get(f"{base}/healthz")[0] == 200
        ready = _wait_ready(base, 15)
        assert ready["status"] == 200, ready
        assert ready["checks"]["traders"]["ok"]
        assert ready["checks"]["prices"]["ok"]
        daemon.wait_for("order_placed", 10)

        status, text = _get(f"{base}/metrics")
        assert status == 200
        assert "quantmesh_orders_placed_total{" in text
        assert 'quantmesh_price_age_seconds{symbol="ETH/USDT"}' in text
        checked = subprocess.run(
            [promtool, "check", "metrics"],
            check=False,
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        assert _get(f"{base}/api/status")[0] == 401
        status, body = _get(f"{base}/api/status", {"Authorization": "Bearer tok-7f3a9c2e"})
        assert status == 200
        snapshot = json.loads(body)
        symbol = snapshot["symbols"]["ETH/USDT"]
        assert snapshot["instance"] == "quantmesh-1"
        assert symbol["trading"] is True
        assert symbol["open_orders"] >= 1
        assert symbol["price"] is not None
        assert "tok-7f3a9c2e" not in daemon.stderr + daemon.stdout


def _post(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()


def test_daemon_off_loopback_without_token_warns_and_refuses_state_changes(
    tmp_path: Path,
) -> None:
    config = changed(fast_config(), {"http": {"enabled": True, "host": "0.0.0.0", "port": 0}})
    path = write_config(tmp_path, config)
    with Daemon(path, tmp_path) as daemon:
        base = f"http://127.0.0.1:{_port(daemon)}"
        (warning,) = daemon.wait_for("http_exposed_without_token", 10)
        assert warning["level"] == "warning"
        assert "http.host is 0.0.0.0" in warning["message"]
        assert "set http.token" in warning["message"]
        status, body = _post(f"{base}/api/status")
        assert status == 403 and "http.token" in json.loads(body)["error"]
        assert _get(f"{base}/api/status")[0] == 200  # reading stays open, as warned
