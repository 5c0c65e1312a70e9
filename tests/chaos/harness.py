"""The chaos fleet: three ``quantmesh run`` processes, each reaching Redis and PostgreSQL
through loopback proxies of its own (so one instance can be cut off either), sharing both
servers and the exchange simulator (one API key each, so the simulator's records say which
instance sent what)."""

from __future__ import annotations

import contextlib
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cli.support import Daemon, write_config
from tests.exchange.sim.server.support import SimProcess, write_sim_config
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import TcpProxy
from tests.servers.redis import RedisServer
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("ETH/USDT", "BTC/USDT")
LEASE_TTL = 3.0
CHECK_INTERVAL = 0.5
# Each database call's own deadline: below the lease, so a trader stalled by a database
# that stopped answering starts journaling well before its lease would end.
STATEMENT_TIMEOUT = 2.0
OWNERS = "quantmesh:lock:{fleet:binance}:owners"  # who holds each symbol, as recorded


def node_config(
    name: str, key: tuple[str, str], sim_port: int, redis_port: int, dsn: str, http_port: int
) -> dict[str, Any]:
    """The shipped simulator example, made one of a fleet of three on the same symbols."""
    text = (ROOT / "config" / "config.sim.example.yaml").read_text(encoding="utf-8")
    config: dict[str, Any] = yaml.safe_load(text.replace("127.0.0.1:8765", f"127.0.0.1:{sim_port}"))
    config["instance"] = {"id": name, "role": "master", "total": 3}
    # the simulator has no request limits of its own: space requests as it can take them
    config["exchange"].update(
        api_key=key[0], secret=key[1], order_resync_interval=2, rate_limit=0.005
    )
    config["trading"] = {
        "shutdown_grace": 3,
        "reconcile_interval": 3,
        "symbols": [
            {"symbol": "ETHUSDT", "price_interval": 2, "order_quantity": 30,
             "buy_window_size": 3, "sell_window_size": 3},
            {"symbol": "BTCUSDT", "price_interval": 20, "order_quantity": 30,
             "buy_window_size": 3, "sell_window_size": 3},
        ],
    }  # fmt: skip
    config["database"] = {
        "type": "postgres",
        "dsn": dsn,
        "journal_path": "./data/journal.jsonl",
        "retry_interval": 1,
        "connect_timeout": 2,
        "statement_timeout": STATEMENT_TIMEOUT,
    }
    config["distributed_lock"] = {
        "enabled": True,
        "fallback_mode": "halt",
        "health_check_interval": 1,
    }
    config["redis"] = {"addr": f"127.0.0.1:{redis_port}"}
    config["coordination"] = {"lease_ttl": LEASE_TTL, "check_interval": CHECK_INTERVAL}
    config["http"] = {"enabled": True, "port": http_port}
    config["logging"] = {"level": "info", "format": "json"}
    return config


@dataclass
class Node:
    name: str
    key: tuple[str, str]
    workdir: Path
    redis_proxy: TcpProxy
    db_proxy: TcpProxy
    http_port: int
    config: Path
    daemon: Daemon | None = None
    paused: bool = False
    logs: list[str] = field(default_factory=list)  # stderr of earlier runs
    token: str | None = None  # the ``http.token`` its /api/ asks for, if set

    @classmethod
    def create(
        cls,
        name: str,
        key: tuple[str, str],
        root: Path,
        sim_port: int,
        redis_port: int,
        pg: PostgresServer,
        database: str,
    ) -> Node:
        workdir = root / name
        workdir.mkdir(parents=True)
        redis_proxy = TcpProxy("127.0.0.1", redis_port)
        redis_proxy.start()
        db_proxy = TcpProxy("127.0.0.1", pg.port)  # PostgreSQL restarts on the same port
        db_proxy.start()
        dsn = pg.url(database, port=db_proxy.port)
        http_port = free_port()
        config = write_config(
            workdir, node_config(name, key, sim_port, redis_proxy.port, dsn, http_port)
        )
        return cls(name, key, workdir, redis_proxy, db_proxy, http_port, config)

    @property
    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def start(self) -> None:
        if self.daemon is not None:
            self.logs.append(self.daemon.stderr)
        self.daemon = Daemon(self.config, self.workdir)

    def status(self) -> dict[str, Any] | None:
        """``/api/status``, or None when it does not answer (dead, frozen, starting)."""
        if not self.alive or self.paused:
            return None
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/api/status")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=1) as answer:
                body: dict[str, Any] = json.loads(answer.read())
                return body
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def trading(self) -> set[str]:
        """Symbols it owns and trades (grid loaded and reconciled), by its status."""
        return self.claims() or set()

    def claims(self) -> set[str] | None:
        """As ``trading``, or None when its status does not answer."""
        status = self.status()
        if status is None:
            return None
        owned = set(status["ownership"]["owned"])
        return {s for s in owned if s in status["symbols"] and status["symbols"][s]["trading"]}

    def metric(self, name: str) -> float | None:
        if not self.alive or self.paused:
            return None
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        total = None
        for line in text.splitlines():
            if line.startswith((name + " ", name + "{")):
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.send(signal.SIGKILL)
        self.daemon.wait(10)

    def pause(self) -> None:
        assert self.daemon is not None
        self.daemon.send(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.daemon is not None
        self.daemon.send(signal.SIGCONT)
        self.paused = False

    def stop(self) -> int | None:
        if self.daemon is None or not self.alive:
            return None if self.daemon is None else self.daemon.proc.returncode
        code, _ = self.daemon.stop(signal.SIGTERM, 20)
        return code

    def close(self) -> None:
        if self.daemon is not None:
            if self.paused:
                self.resume()
            self.daemon.kill()
        self.redis_proxy.close()
        self.db_proxy.close()

    def stderr(self) -> str:
        return "".join(self.logs) + (self.daemon.stderr if self.daemon is not None else "")


@contextlib.contextmanager
def sim_fleet(
    root: Path,
    keys: Sequence[tuple[str, str]],
    make_node: Callable[[str, tuple[str, str], int], Node],
) -> Iterator[tuple[list[Node], SimProcess]]:
    """The exchange simulator under ``root``, its prices walking (a step every 0.2 s:
    orders fill, sells follow, levels turn over), accepting ``keys``, and one node per key,
    ``make_node(name, key, sim_port)`` (``node-1``, ``node-2``, ...), not started. At the
    end the nodes are closed and, for a post-mortem (also of a run that failed half-way),
    the simulator's records and each node's stderr are left beside the logs."""
    sim_config = write_sim_config(root / "sim", volatility=0.0005, interval=0.2)
    with SimProcess(
        root / "sim",
        "--config",
        str(sim_config),
        api_key=keys[0][0],
        api_secret=keys[0][1],
        extra_keys=keys[1:],
    ) as sim:
        nodes = [make_node(f"node-{i + 1}", key, sim.port) for i, key in enumerate(keys)]
        try:
            yield nodes, sim
        finally:
            for name, read in (
                ("orders", sim.orders),
                ("actions", sim.actions),
                ("trades", sim.trades),
            ):
                with contextlib.suppress(Exception):
                    (root / f"{name}.json").write_text(json.dumps(read(), indent=1))
            for node in nodes:
                node.close()
                (node.workdir / "stderr.log").write_text(node.stderr())


def owner_of(nodes: list[Node], symbol: str) -> Node | None:
    """The one node trading ``symbol`` now; fails if two say they do."""
    owners = [n for n in nodes if symbol in n.trading()]
    assert len(owners) <= 1, f"{symbol} traded by {[n.name for n in owners]}"
    return owners[0] if owners else None


def wait_owner(
    nodes: list[Node], symbol: str, timeout: float, other_than: Node | None = None
) -> tuple[Node, float]:
    """Wait until a node (not ``other_than``) trades ``symbol``; (node, seconds waited)."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        owner = owner_of([n for n in nodes if n is not other_than], symbol)
        if owner is not None:
            return owner, time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"nobody took {symbol} over within {timeout:g} s\n" + where(nodes, symbol))


def where(nodes: list[Node], symbol: str) -> str:
    """What each node says of ``symbol`` now, and its last log lines naming it: why a
    take-over did not come, in a failure's message (CI keeps no node logs)."""
    lines = []
    for node in nodes:
        state = "frozen" if node.paused else "running" if node.alive else "not running"
        status = node.status()
        if status is not None:
            owned = status["ownership"]["owned"]
            state += f", owns {owned}, {symbol}: {json.dumps(status['symbols'].get(symbol))}"
        lines.append(f"{node.name}: {state}")
        lines += [f"  {line[:300]}" for line in node.stderr().splitlines() if symbol in line][-4:]
    return "\n".join(lines)


def settled(nodes: list[Node], redis: RedisServer, symbol: str, timeout: float) -> Node:
    """Wait until the node trading ``symbol`` is the owner Redis records (after a Redis
    restart a former owner may say it trades until its next renewal finds the lease gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owner = owner_of(nodes, symbol)
        raw = redis.command("HGET", OWNERS, symbol)
        if owner is not None and raw and json.loads(raw)["owner"] == owner.name:
            return owner
        time.sleep(0.1)
    raise AssertionError(f"{symbol}: no settled owner within {timeout:g} s")
