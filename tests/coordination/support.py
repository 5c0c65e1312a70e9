"""In-process instances sharing a real lock server (Redis, etcd, or the database:
``distributed_lock.type``): each with its own simulated exchange and SQLite database
(ownership, not trading, is under test here). On a database lock (postgres, mysql) the
instance's ``database`` section names that server (the lock's DSN); the grids still stay
in the test's SQLite files.

The lock and the coordinator come from ``quantmesh.wiring``, built from settings, so the
tests see what ``quantmesh run`` builds. ``database`` is the kind an instance declares
(``database.type``): ``postgres`` by default, as a fleet whose grids move between its
instances must have; the grids themselves stay in the test's SQLite files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from quantmesh.app import Service
from quantmesh.config import parse_settings
from quantmesh.control.board import ControlBoard
from quantmesh.control.reload import ReloadReport
from quantmesh.coordination.allocation import Mode
from quantmesh.coordination.coordinator import Coordinator
from quantmesh.coordination.servers import lock_server
from quantmesh.exchange.sim.simulated import SimMarket, SimulatedExchange
from quantmesh.lock.failover import FailoverLock
from quantmesh.observability.metrics import Metrics
from quantmesh.storage.base import Repository
from quantmesh.storage.controls import SqlControlStore
from quantmesh.storage.repository import SqlRepository
from quantmesh.wiring import ConfigReloader, assemble, build_coordinator, build_failover_lock
from tests.lock.backends import LOCK_DATABASE
from tests.servers.mariadb import MARIADB_USER
from tests.servers.postgres import PG_USER
from tests.trading.support import FEE, RULES, SETTINGS, make_repository

TTL = 1.5
CHECK = 0.2


def market(symbol: str) -> SimMarket:
    base, quote = symbol.split("/")
    return SimMarket(replace(RULES, symbol=symbol, base=base, quote=quote), Decimal(2000))


@dataclass
class Instance:
    name: str
    service: Service
    metrics: Metrics
    stop: asyncio.Event
    task: asyncio.Task[object] | None = None
    config: Path | None = None  # the settings file a reload reads

    @property
    def coordinator(self) -> Coordinator:
        return self.service.coordinator

    @property
    def lock(self) -> FailoverLock:
        assert isinstance(self.service.locker, FailoverLock)
        return self.service.locker

    def trading(self) -> set[str]:
        return {t.symbol for t in self.service.traders if t.trading}

    def start(self) -> Instance:
        self.task = asyncio.create_task(self.service.run(self.stop))
        return self

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None and not self.task.done():
            try:
                await asyncio.wait_for(self.task, 10)
            except TimeoutError:  # stuck: cancel it, so its database thread stops too
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)

    async def reload(self, symbols: Sequence[str]) -> ReloadReport:
        """Configure ``symbols`` in the settings file, the rest unchanged, and reload it
        as ``quantmesh reload`` does."""
        assert self.config is not None
        text = self.config.read_text().splitlines()
        self.config.write_text(
            "\n".join(
                symbols_line(symbols) if line.startswith("trading:") else line for line in text
            )
            + "\n"
        )
        return await self.service.reload()

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


DATABASE_LOCKS = ("postgres", "mysql")


def server_settings(kind: str, port: int, endpoints: Sequence[str] = ()) -> str:
    """The settings lines that put an instance's lock on the ``kind`` server at ``port``
    (etcd: on ``endpoints`` instead, when given; a database lock: the ``database``
    section, on the test servers' lock database)."""
    if kind == "etcd":
        listed = ", ".join(f"'{e}'" for e in endpoints or [f"127.0.0.1:{port}"])
        return f"etcd: {{endpoints: [{listed}]}}"
    if kind in DATABASE_LOCKS:
        return f'database: {{type: {kind}, dsn: "{database_url(kind, port)}"}}'
    return f"redis: {{addr: '127.0.0.1:{port}'}}"


def database_url(kind: str, port: int) -> str:
    """The test servers' lock database (with ``lock_leases``) at ``port``."""
    if kind == "postgres":
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{port}/{LOCK_DATABASE}"
    return f"mysql+aiomysql://{MARIADB_USER}@127.0.0.1:{port}/{LOCK_DATABASE}"


def instance(
    tmp_path: Path,
    name: str,
    port: int,
    symbols: Sequence[str] = ("ETH/USDT",),
    *,
    role: str = "master",
    mode: Mode = "static",
    ttl: float = TTL,
    instance_id: str | None = None,
    database: str = "postgres",
    fallback_mode: str = "halt",
    reconcile_interval: float = SETTINGS.reconcile_interval,
    controls: SqlRepository | None = None,
    markets: Sequence[str] = (),
    repository: Repository | None = None,
    server: str = "redis",
    endpoints: Sequence[str] = (),
) -> Instance:
    """``port``: the lock server's (``server``: redis, etcd, postgres or mysql), or a
    proxy's in front of it; ``markets``: more symbols its simulated exchange lists (for a reload to add);
    ``repository``: where its grids live instead of its own SQLite file; ``endpoints``:
    every member of an etcd cluster."""
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    metrics = Metrics()
    dsn = "postgresql://quantmesh@127.0.0.1/quantmesh" if database != "sqlite" else "x.db"
    database_line = f'database: {{type: {database}, dsn: "{dsn}"}}'
    if server in DATABASE_LOCKS:  # the lock's database is the one the settings name
        database_line = ""
    text = f"""
instance: {{id: {instance_id or name}, role: {role}}}
{database_line}
distributed_lock:
  enabled: true
  type: {server}
  fallback_mode: {fallback_mode}
  health_check_interval: 0.3
{server_settings(server, port, endpoints)}
coordination: {{mode: {mode}, lease_ttl: {ttl}, check_interval: {CHECK}}}
{symbols_line(symbols)}
"""
    settings = parse_settings(text, env={})
    config = directory / "config.yaml"
    config.write_text(text)
    shared = lock_server(settings)
    locker = build_failover_lock(settings, shared, metrics)
    coordinator = build_coordinator(settings, "simulated", metrics, locker, shared)
    exchange = SimulatedExchange(
        {s: market(s) for s in (*symbols, *markets)},
        {"USDT": Decimal(100000)},
        FEE,
        directory / "sim.db",
    )
    service = assemble(
        [
            replace(
                SETTINGS,
                grid=replace(SETTINGS.grid, symbol=s),
                reconcile_interval=reconcile_interval,
            )
            for s in symbols
        ],
        exchange=exchange,
        repository=make_repository(directory) if repository is None else repository,
        locker=locker,
        metrics=metrics,
        coordinator=coordinator,
        shutdown_grace=1.0,
        controls=None if controls is None else control_board(controls, name),
        reloader=ConfigReloader(config, settings, metrics),
    )
    return Instance(name, service, metrics, asyncio.Event(), config=config)


def symbols_line(symbols: Sequence[str]) -> str:
    """The ``trading`` line of an instance's settings file."""
    listed = ", ".join(f"{{symbol: {s}, price_interval: 10, anchor_price: 2000}}" for s in symbols)
    return f"trading: {{symbols: [{listed}]}}"


def control_board(database: SqlRepository, name: str) -> ControlBoard:
    """A board on the fleet's shared database (``database``, started by the test), read
    every check interval, as ``wiring.build_control_board`` builds it."""
    store = SqlControlStore(database.runner, "simulated")
    return ControlBoard(store, instance=name, refresh_interval=CHECK)


class Instances:
    """Every instance a test starts, on the ``server`` lock server (redis unless the test
    asks for ``fleet_server``); closed at the end even when the test fails (their
    database threads would otherwise keep the process alive)."""

    def __init__(self, tmp_path: Path, server: str = "redis") -> None:
        self.tmp_path = tmp_path
        self.server = server
        self.started: list[Instance] = []

    def start(self, name: str, port: int, *args: Any, **kwargs: Any) -> Instance:
        kwargs.setdefault("server", self.server)
        node = instance(self.tmp_path, name, port, *args, **kwargs).start()
        self.started.append(node)
        return node

    async def close(self) -> None:
        await asyncio.gather(*(node.close() for node in self.started))
