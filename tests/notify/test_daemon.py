"""``quantmesh run`` and ``quantmesh notify-test`` as processes, with local receivers:
the daemon's started and stopped messages, signed, with no secret in its log; the test
command's per-channel verdict; a fleet of three with a failover telling it once."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantmesh.notify.formats import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.chaos.harness import SYMBOLS, Node, owner_of, wait_owner
from tests.cli.support import Daemon, changed, fast_config, run_cli, write_config
from tests.exchange.sim.server.support import EXTRA_KEYS, SimProcess, write_sim_config
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer
from tests.support import free_port

from .support import ThreadedReceiver

SECRET = "daemon-hmac-secret-42b7"
HOOK_TOKEN = "hook-path-token-9c1d"
TELEGRAM_TOKEN = "987654:telegram-token-e3f0"


@pytest.mark.timeout(60)
def test_the_daemon_says_it_started_and_stopped_signed_without_secrets_in_its_log(
    tmp_path: Path,
) -> None:
    with ThreadedReceiver() as receiver:
        config = changed(
            fast_config(),
            {
                "notifications": {
                    "daily_summary_at": None,
                    "channels": [
                        {
                            "type": "webhook",
                            "webhook_url": "${HOOK_URL}",
                            "secret": "${HOOK_SECRET}",
                            "events": ["instance_started", "instance_stopped"],
                        }
                    ],
                },
                "logging": {"level": "debug", "format": "json"},
            },
        )
        env = {"HOOK_URL": receiver.url(f"/{HOOK_TOKEN}"), "HOOK_SECRET": SECRET}
        with Daemon(write_config(tmp_path, config), tmp_path, env=env) as daemon:
            [started] = receiver.wait_for("instance_started", 1, 20)
            assert started["data"] == {"symbols": ["ETH/USDT"], "role": "master"}
            code, _ = daemon.stop(signal.SIGTERM, 20)
        assert code == 0, daemon.stderr[-3000:]
        [stopped] = receiver.bodies("instance_stopped")  # sent before the process ended
        assert stopped["data"]["reason"] == "stopped on request"
        assert stopped["instance"] == "quantmesh-1"
        for request in receiver.received:
            assert request.path == f"/{HOOK_TOKEN}"
            stamp = request.headers[TIMESTAMP_HEADER]
            assert verify(SECRET, stamp, request.body, request.headers[SIGNATURE_HEADER])
        assert daemon.events("notification_sent")
        assert SECRET not in daemon.stderr and HOOK_TOKEN not in daemon.stderr
        assert "Traceback" not in daemon.stderr


@pytest.mark.timeout(60)
def test_notify_test_says_per_channel_whether_the_message_arrived(tmp_path: Path) -> None:
    with ThreadedReceiver() as receiver:
        channels: list[dict[str, Any]] = [
            {"type": "webhook", "name": "ops", "webhook_url": receiver.url("/ops")},
            {
                "type": "telegram",
                "token": "${TELEGRAM_TOKEN}",
                "chat_id": "42",
                "api_base": f"http://127.0.0.1:{receiver.port}",
            },
            {"type": "slack", "webhook_url": receiver.url("/slack")},
            {"type": "discord", "webhook_url": receiver.url("/discord")},
        ]
        env = {"TELEGRAM_TOKEN": TELEGRAM_TOKEN}
        config = changed(fast_config(), {"notifications": {"channels": channels}})
        ok = run_cli(["notify-test", "-c", str(write_config(tmp_path, config))], tmp_path, env)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines() == [
            "ops: arrived",
            "telegram: arrived",
            "slack: arrived",
            "discord: arrived",
        ]
        paths = sorted(r.path for r in receiver.received)
        assert paths == sorted(["/ops", f"/bot{TELEGRAM_TOKEN}/sendMessage", "/slack", "/discord"])
        [webhook] = [b for b in receiver.bodies() if "schema" in b]
        assert webhook["event"] == "test" and webhook["instance"] == "quantmesh-1"

        down = f"http://127.0.0.1:{free_port()}/x"
        channels.append({"type": "webhook", "name": "down", "webhook_url": down})
        config = changed(fast_config(), {"notifications": {"channels": channels}})
        failed = run_cli(["notify-test", "-c", str(write_config(tmp_path, config))], tmp_path, env)
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[-1] == "down: FAILED (ClientConnectorError)"
    assert TELEGRAM_TOKEN not in failed.stdout + failed.stderr + ok.stdout + ok.stderr


def test_notify_test_without_channels_fails_saying_so(tmp_path: Path) -> None:
    result = run_cli(["notify-test", "-c", str(write_config(tmp_path, fast_config()))], tmp_path)
    assert result.returncode == 1
    assert "no channel under notifications.channels" in result.stderr


KEYS = (("notify-key-1", "notify-secret-1"), *EXTRA_KEYS[:2])


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_failover_in_a_fleet_of_three_is_told_exactly_once(tmp_path: Path) -> None:
    started = time.monotonic()
    with (
        ThreadedReceiver() as receiver,
        RedisServer(tmp_path / "redis") as redis,
        PostgresServer() as pg,
    ):
        pg.create_database("quantmesh")
        sim_config = write_sim_config(tmp_path / "sim")
        with SimProcess(
            tmp_path / "sim",
            "--config",
            str(sim_config),
            api_key=KEYS[0][0],
            api_secret=KEYS[0][1],
            extra_keys=KEYS[1:],
        ) as sim:
            nodes = [
                Node.create(f"node-{i + 1}", key, tmp_path, sim.port, redis.port, pg, "quantmesh")
                for i, key in enumerate(KEYS)
            ]
            try:
                for node in nodes:
                    notify(node, receiver.url())
                    node.start()
                owners = {symbol: wait_owner(nodes, symbol, 40)[0] for symbol in SYMBOLS}
                assert len(receiver.wait_for("instance_started", 3, 20)) == 3
                victim = owners[SYMBOLS[0]]
                lost = {s for s, owner in owners.items() if owner is victim}
                victim.kill()
                survivors = [n for n in nodes if n is not victim]
                for symbol in lost:
                    wait_owner(survivors, symbol, 20)
                told = receiver.wait_for("symbol_taken_over", len(lost), 10)
                time.sleep(2)  # a second message would come within this
                told = receiver.bodies("symbol_taken_over")
                assert sorted(body["symbol"] for body in told) == sorted(lost), told
                for body in told:
                    owner = owner_of(survivors, body["symbol"])
                    assert owner is not None and body["instance"] == owner.name
                    assert body["data"]["previous_owner"] == victim.name
                    assert 0 < body["data"]["unowned_seconds"] < 20
                assert receiver.bodies("instance_stopped") == []  # killed: nothing said
            finally:
                for node in nodes:
                    node.close()
                    (node.workdir / "stderr.log").write_text(node.stderr())
    assert time.monotonic() - started < 60


def notify(node: Node, url: str) -> None:
    """Give ``node`` a webhook channel for its start and for take-overs."""
    config = yaml.safe_load(node.config.read_text(encoding="utf-8"))
    config["notifications"] = {
        "daily_summary_at": None,
        "channels": [
            {
                "type": "webhook",
                "webhook_url": url,
                "events": ["instance_started", "symbol_taken_over"],
            }
        ],
    }
    node.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
