"""Builds every component from settings, in one place, and hands them to the service.

What only some configurations use - a lock server and its failover, notification channels
and their daily summary, a live exchange - is imported where it is built, so the default
daemon (one instance, no channels, the simulated exchange) never loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

import structlog
from sqlalchemy import Engine

from quantmesh.app import Components, HttpFactory, Reloader, RunResult, Service, serve
from quantmesh.config import ConfigError, Settings, SymbolSettings, load_settings
from quantmesh.control.board import ControlBoard
from quantmesh.control.desired import ACTIVE, Action, Desired
from quantmesh.control.reload import ReloadReport, diff, effective
from quantmesh.coordination.coordinator import Claim, Coordinator, LocalFallback, member_of
from quantmesh.endpoints import build_http
from quantmesh.errors import LockError, StartupError
from quantmesh.exchange.base import Exchange
from quantmesh.exchange.sim.markets import build_simulated
from quantmesh.grid.risk import Fired, InstanceLimits, RiskAction
from quantmesh.lock.base import ServiceLock
from quantmesh.lock.keys import Granularity, LockKeys
from quantmesh.lock.metered import MeteredLock
from quantmesh.lock.nop import NopLock
from quantmesh.notify.events import NOP, NotificationService, Notifier, SymbolDay
from quantmesh.observability.collectors import ServiceCollector, bind_exchange_clock
from quantmesh.observability.control_api import report_control
from quantmesh.observability.logging import configure_logging
from quantmesh.observability.metrics import Metrics
from quantmesh.observability.status import durability_block
from quantmesh.preflight import config_warnings
from quantmesh.secrets import dsn_passwords
from quantmesh.storage.base import Repository, SymbolSummary, TradeFilter
from quantmesh.storage.buffer import BufferedRepository
from quantmesh.storage.controls import SqlControlStore
from quantmesh.storage.engine import bound_sessions, create_engine_for, to_sqlalchemy_url
from quantmesh.storage.group_commit import GroupCommit
from quantmesh.storage.peaks import SqlPeakStore
from quantmesh.storage.repository import SqlRepository
from quantmesh.trading.risk import RISK_ACTOR, PeakStore
from quantmesh.trading.risk import Record as RiskRecord
from quantmesh.trading.trader import Trader, TraderSettings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from quantmesh.coordination.servers import LockServer
    from quantmesh.lock.failover import FailoverLock
    from quantmesh.notify.summary import ReadDay

log = structlog.get_logger(__name__)


def secret_values(settings: Settings) -> list[str]:
    """Every secret in the settings, for the log redactor."""
    values = [
        settings.exchange.api_key.get_secret_value(),
        settings.exchange.secret.get_secret_value(),
        settings.exchange.password.get_secret_value(),
        settings.redis.password.get_secret_value(),
        settings.redis.sentinel_password.get_secret_value(),
        settings.etcd.password.get_secret_value(),
        settings.http.token.get_secret_value(),
        *dsn_passwords(settings.database.dsn.get_secret_value()),
    ]
    if settings.redis.url is not None:
        values.extend(dsn_passwords(settings.redis.url.get_secret_value()))
    for channel in settings.notifications.channels:
        for secret in (channel.webhook_url, channel.secret, channel.token):
            if secret is not None:
                values.append(secret.get_secret_value())
    return [v for v in values if v]


def build_exchange(settings: Settings) -> Exchange:
    """The simulated exchange, paper trading on a venue's public data, or any ccxt exchange
    (real, testnet, or the simulator server)."""
    if settings.exchange.name == "simulated":
        sim = settings.exchange.simulated
        return build_simulated(sim, sim.state_path)
    if settings.exchange.name == "paper":
        from quantmesh.exchange.paper.build import build_paper_exchange  # ccxt imports slowly

        return build_paper_exchange(settings.exchange)
    from quantmesh.exchange.ccxt.client import build_ccxt_exchange  # ccxt imports slowly

    return build_ccxt_exchange(settings.exchange)


def build_lock(settings: Settings, metrics: Metrics | None = None) -> ServiceLock:
    """NopLock for a single instance; else the lock server's lock (``distributed_lock.
    type``) behind its health-checked fallback.

    Nothing connects here: the first lock call or health check does, so a lock server
    that is down at start-up halts trading (or falls back) exactly as one that fails later.
    """
    if not settings.distributed_lock.enabled:
        return NopLock()
    from quantmesh.coordination.servers import lock_server

    return build_failover_lock(settings, lock_server(settings), metrics)


def build_failover_lock(
    settings: Settings,
    server: LockServer,
    metrics: Metrics | None = None,
    notifier: Notifier = NOP,
) -> FailoverLock:
    """``server``'s lock behind its health-checked fallback (``distributed_lock.enabled``)."""
    from quantmesh.lock.failover import FailoverLock

    lock_settings = settings.distributed_lock
    if lock_settings.fallback_mode == "single_instance":
        log.warning(
            "lock_fallback_single_instance_configured",
            effect=f"while {server.name} is down, this instance claims no symbol and keeps "
            "trading, on a local lock, the symbols it owns that no other live instance lists",
        )
    return FailoverLock(
        server.lock,
        fallback_mode=lock_settings.fallback_mode,
        health_check_interval=lock_settings.health_check_interval,
        metrics=metrics,
        notifier=notifier,
        backend=server.name,
    )


def build_coordinator(
    settings: Settings,
    exchange: str,
    metrics: Metrics,
    failover: FailoverLock | None,
    server: LockServer | None,
    notifier: Notifier = NOP,
) -> Coordinator:
    """Ownership leases and membership on the lock server whenever the lock is enabled,
    in either fallback mode; without it (one instance) every symbol is owned here.

    With ``fallback_mode: single_instance`` the ownership leases are the server's leases
    as with ``halt``; only while the lock runs on its local fallback (the server down)
    are the owned symbols that no other live member lists kept trading, and nothing is
    claimed."""
    instance = settings.instance
    me = member_of(
        instance.id,
        instance.role,
        (s.symbol for s in settings.symbols),
        database=settings.database.type,
    )
    lock_settings = settings.distributed_lock
    if failover is None or server is None:
        return Coordinator(me, metrics=metrics)
    fallback: LocalFallback | None = None
    if lock_settings.fallback_mode == "single_instance":
        lock = failover
        fallback = LocalFallback(active=lambda: lock.state == "single_instance", check=lock.check)
    coordination = settings.coordination
    return Coordinator(
        me,
        metrics=metrics,
        mode=coordination.mode,
        fleet=server.fleet(me, exchange, coordination.lease_ttl),
        locker=MeteredLock(failover, metrics=metrics, purpose="ownership"),
        keys=LockKeys(exchange, lock_settings.granularity),
        lease_ttl=coordination.lease_ttl,
        check_interval=coordination.check_interval,
        fallback=fallback,
        notifier=notifier,
    )


def build_notifications(
    settings: Settings,
    metrics: Metrics,
    server: LockServer | None,
    *,
    members: Callable[[], list[str]],
    read_day: ReadDay,
) -> NotificationService:
    """The notifier (``NOP`` without channels): with a lock server, fleet events go
    through its election (falling back on the smallest live instance id while the server
    is down); each instance sends its own daily summary when ``daily_summary_at`` is set."""
    notify = settings.notifications
    if not notify.channels:
        return NOP
    from quantmesh.notify.build import build_notifier
    from quantmesh.notify.election import smallest_id
    from quantmesh.notify.summary import DailySummary

    me = settings.instance.id
    election = None
    if server is not None:
        election = server.election(me, notify.dedupe_window, smallest_id(me, members))
    jobs = []
    at = notify.daily_summary_time
    if at is not None:
        jobs.append(DailySummary(at, read_day).run)
    return build_notifier(
        notify, instance=me, registry=metrics.registry, election=election, jobs=jobs
    )


async def read_day(
    repository: Repository, symbols: Iterable[str], since: float, until: float
) -> list[SymbolDay]:
    """Each of ``symbols``' day between ``since`` and ``until`` (the daily summary): round
    trips closed and their PnL, fees paid (in the quote currency), inventory and its value
    at the last price stored."""
    by_symbol = {summary.symbol: summary for summary in await repository.summaries()}
    days = []
    for symbol in sorted(symbols):
        trips = [
            t for t in await repository.get_round_trips(symbol) if since <= t.closed_at < until
        ]
        quote = symbol.partition("/")[2]
        fills = await repository.get_trades(
            TradeFilter(symbol=symbol, since=since, until=until, limit=100_000)
        )
        fees = sum((f.fee for f in fills if f.fee_currency == quote), Decimal(0))
        summary = by_symbol.get(symbol)
        inventory = summary.inventory if summary is not None else Decimal(0)
        price = summary.last_price if summary is not None else None
        days.append(
            SymbolDay(
                symbol,
                len(trips),
                sum((t.pnl for t in trips), Decimal(0)),
                fees,
                inventory,
                inventory * price if price is not None else None,
            )
        )
    return days


def build_engine(settings: Settings) -> Engine | AsyncEngine:
    """The configured database's engine: the seed's pool settings, timeouts, pre-ping.

    A server's sessions are bounded on the server (``bound_sessions``): an instance frozen
    in an open transaction (SIGSTOP, a paused VM) holds the rows of its grid locked, and the
    instance that takes its symbols over - once the frozen one's lease has lapsed, at least
    two thirds of ``lease_ttl`` after the freeze - must find them free, not wait on them
    until its own statements time out. So an idle open transaction ends after half a lease
    (or ``statement_timeout``, if shorter). The repository's transactions never wait
    between their statements on anything but the event loop."""
    db = settings.database
    url = to_sqlalchemy_url(db.type, db.dsn.get_secret_value())
    engine = create_engine_for(
        db.type,
        url,
        pool_size=db.max_idle_conns or 1,
        max_overflow=max(db.max_open_conns - db.max_idle_conns, 0),
        pool_recycle=db.conn_max_lifetime,
        connect_timeout=db.connect_timeout,
        statement_timeout=db.statement_timeout,
        # who holds a session, in the server's view (PostgreSQL's pg_stat_activity)
        application_name=f"quantmesh {settings.instance.id}",
    )
    if db.type != "sqlite":  # a server's engine is async
        idle = min(db.statement_timeout, settings.coordination.lease_ttl / 2)
        server = cast("AsyncEngine", engine)
        bound_sessions(server, idle_in_transaction=idle, lock_wait=db.statement_timeout)
    return engine


def build_sql_repository(
    settings: Settings, exchange: str, metrics: Metrics | None = None
) -> SqlRepository:
    """The repository that talks to the database directly."""
    db = settings.database
    return SqlRepository(
        build_engine(settings),
        exchange,
        metrics=metrics.db if metrics is not None else None,
        auto_migrate=db.auto_migrate,
        timeout=db.connect_timeout + db.statement_timeout,
    )


def buffer_writes(
    settings: Settings,
    repository: SqlRepository,
    metrics: Metrics | None = None,
    notifier: Notifier = NOP,
) -> Repository:
    """``repository`` behind the write buffer when ``database.buffer_enabled``."""
    db = settings.database
    if not db.buffer_enabled:
        return repository
    return BufferedRepository(
        repository,
        db.journal_path,
        buffer_size=db.buffer_size,
        retry_interval=db.retry_interval,
        metrics=metrics.db if metrics is not None else None,
        notifier=notifier,
    )


def trader_settings(symbol: SymbolSettings, settings: Settings) -> TraderSettings:
    ttl = settings.distributed_lock.ttl
    risk = symbol.risk.limits()
    return TraderSettings(
        grid=symbol.grid_params(),
        place_ttl=ttl.place,
        cancel_ttl=ttl.cancel,
        reconcile_interval=settings.trading.reconcile_interval,
        reconcile_ttl=ttl.reconcile,
        # A create that timed out may surface late; "not found" is trusted after this.
        unknown_grace=max(30.0, 3 * settings.exchange.request_timeout),
        liquidation=symbol.risk.liquidation(),
        count_days=settings.risk.max_daily_loss is not None,
        risk=risk if risk.any else None,
    )


def assemble(
    symbols: Sequence[TraderSettings],
    *,
    exchange: Exchange,
    repository: Repository,
    locker: ServiceLock,
    metrics: Metrics,
    coordinator: Coordinator | None = None,
    granularity: Granularity = "level",
    shutdown_grace: float = 5.0,
    cancel_on_exit: bool = False,
    cancel_timeout: float = 30.0,
    make_http: HttpFactory | None = None,
    controls: ControlBoard | None = None,
    reloader: Reloader | None = None,
    notifier: NotificationService = NOP,
    risk: InstanceLimits | None = None,
    peaks: PeakStore | None = None,
) -> Service:
    """A service trading ``symbols`` with these components, one trader per owned symbol.

    Without a ``coordinator`` this instance owns every symbol (a single instance)."""
    keys = LockKeys(exchange.name, granularity)
    if coordinator is None:
        me = member_of("local", "master", (s.symbol for s in symbols))
        coordinator = Coordinator(me, metrics=metrics)
    placing_block = _durability_block(repository)
    leased = coordinator.leased
    # The seed's lock metrics, per purpose; the service keeps the lock itself (health
    # checks, status, close).
    order_locks = MeteredLock(locker, metrics=metrics, purpose="order")
    # the traders' execution records, several symbols to a transaction when they queue up
    group_commit = GroupCommit(repository)
    reconcile_locks = MeteredLock(locker, metrics=metrics, purpose="reconcile")

    def make_trader(settings: TraderSettings, claim: Claim) -> Trader:
        if leased:  # a former owner may have sent any id: look each up before reusing it
            settings = replace(settings, verify_window=coordinator.lease_ttl)
        return Trader(
            settings,
            exchange=exchange,
            repository=repository,
            locker=order_locks,
            reconcile_locker=reconcile_locks,
            lock_keys=keys,
            metrics=metrics,
            fence=lambda: claim.fence,
            exclusive=not leased,
            owner_valid=claim.valid,
            owner_deadline=claim.deadline,
            placing_block=placing_block,
            control=_control_of(controls, settings.symbol),
            notifier=notifier,
            risk_record=_risk_record(controls, settings.symbol),
            risk_peaks=peaks,
            group_commit=group_commit,
        )

    components = Components(
        exchange,
        repository,
        locker,
        coordinator,
        metrics,
        controls,
        notifier=notifier,
        risk=risk or InstanceLimits(),
    )
    return Service(
        symbols,
        components,
        make_trader=make_trader,
        make_http=make_http,
        shutdown_grace=shutdown_grace,
        cancel_on_exit=cancel_on_exit,
        cancel_timeout=cancel_timeout,
        reloader=reloader,
    )


def build_control_board(
    settings: Settings, database: SqlRepository, exchange: str, metrics: Metrics
) -> ControlBoard:
    """What people ask of the symbols, read from the database every check interval. Not
    behind the write buffer: a request the database does not store must fail."""
    return ControlBoard(
        SqlControlStore(database.runner, exchange),
        instance=settings.instance.id,
        refresh_interval=settings.coordination.check_interval,
        on_change=report_control(metrics),
    )


def _control_of(controls: ControlBoard | None, symbol: str) -> Callable[[], Desired | None]:
    """What people asked of ``symbol``: from the board (``None`` until it is read); always
    active without one (tests and benchmarks that build a service without a database)."""
    if controls is None:
        return lambda: ACTIVE
    return lambda: controls.get(symbol)


_HOLD_ACTIONS: Final[Mapping[RiskAction, Action]] = {
    "stop_buys": "stop-buys",
    "halt": "cancel-all",
    "liquidate": "liquidate",
}


def _risk_record(controls: ControlBoard | None, symbol: str) -> RiskRecord | None:
    """How a risk trigger's hold is stored: as desired state on the board (``halt`` is
    ``cancel-all``), with the trigger as who asked; none without a board (the hold then
    lasts as long as the trader)."""
    if controls is None:
        return None

    async def record(fired: Fired) -> None:
        action: Action = _HOLD_ACTIONS[fired.action]
        await controls.apply(symbol, action, reason=fired.reason, actor=RISK_ACTOR + fired.trigger)

    return record


def _durability_block(repository: Repository) -> Callable[[], str | None]:
    """Never fail open: while writes are held in memory only (the journal refused them),
    a crash would lose them, so nothing new is placed until they are stored."""

    def block() -> str | None:
        report = repository.durability()
        return durability_block(report.volatile) if report is not None else None

    return block


class ConfigReloader:
    """Reads the settings file again and applies what changed to the running service.

    An invalid file changes nothing (``reload_refused`` with check-config's lines). A
    valid one is compared with the settings in force (``control.reload.diff``), logged one
    line per change (``reload_change``), and applied: symbols added and removed, traders
    restarted on new grid parameters, the live ``trading`` settings; what needs a restart
    is said and left out (``reload_change_refused``), as is a refused change of a symbol.
    """

    def __init__(self, path: Path, settings: Settings, metrics: Metrics) -> None:
        self.path = path
        self.settings = settings  # in force: what the last reload applied
        self._metrics = metrics

    async def __call__(self, service: Service) -> ReloadReport:
        try:
            new = load_settings(self.path)
        except ConfigError as exc:
            log.error("reload_refused", path=str(self.path), problems=exc.problems)
            self._metrics.config_reloads.labels("refused").inc()
            return ReloadReport(time.time(), ok=False, problems=tuple(exc.problems))
        for warning in config_warnings(new):
            log.warning("config_warning", warning=warning)
        plan = diff(self.settings, new)
        refused: dict[str, str] = {}  # symbol -> why its change was not applied
        trading = new.trading
        service.configure(
            shutdown_grace=trading.shutdown_grace,
            cancel_on_exit=trading.cancel_on_exit,
            cancel_timeout=trading.cancel_timeout,
        )
        by_symbol = {symbol.symbol: symbol for symbol in new.symbols}
        for change in plan.changed:
            why = service.retune_symbol(trader_settings(by_symbol[change.symbol], self.settings))
            if why is not None:
                refused[change.symbol] = why
        for symbol in plan.added:
            why = service.add_symbol(trader_settings(by_symbol[symbol], self.settings))
            if why is not None:
                refused[symbol] = why
        for symbol in plan.removed:
            await service.remove_symbol(symbol)
        self.settings = effective(self.settings, new, kept=refused)
        lines = []
        for line, applied in plan.entries(refused):
            if applied:
                log.info("reload_change", change=line)
            else:
                log.warning("reload_change_refused", change=line)
            lines.append(line)
        self._metrics.config_reloads.labels("applied").inc()
        log.info("reload_applied", path=str(self.path), changes=len(lines))
        return ReloadReport(time.time(), ok=True, changes=tuple(lines))


def build_service(
    settings: Settings, metrics: Metrics | None = None, config_path: Path | None = None
) -> Service:
    # What may refuse the settings comes first; the repository creates the data directory.
    metrics = metrics if metrics is not None else Metrics()
    server: LockServer | None = None
    if settings.distributed_lock.enabled:
        from quantmesh.coordination.servers import lock_server

        server = lock_server(settings)
    # the notifier comes first: the components below get it; its summary job and fleet
    # election read the repository and coordinator built after it (before it runs)
    notifier = build_notifications(
        settings,
        metrics,
        server,
        members=lambda: [m.id for m in coordinator.members],
        read_day=lambda since, until: read_day(repository, coordinator.owned, since, until),
    )
    failover = (
        build_failover_lock(settings, server, metrics, notifier) if server is not None else None
    )
    locker: ServiceLock = failover if failover is not None else NopLock()
    exchange = build_exchange(settings)
    database = build_sql_repository(settings, exchange.name, metrics)
    repository = buffer_writes(settings, database, metrics, notifier)
    coordinator = build_coordinator(settings, exchange.name, metrics, failover, server, notifier)
    reloader = ConfigReloader(config_path, settings, metrics) if config_path else None
    service = assemble(
        [trader_settings(symbol, settings) for symbol in settings.symbols],
        exchange=exchange,
        repository=repository,
        controls=build_control_board(settings, database, exchange.name, metrics),
        locker=locker,
        metrics=metrics,
        notifier=notifier,
        coordinator=coordinator,
        granularity=settings.distributed_lock.granularity,
        shutdown_grace=settings.trading.shutdown_grace,
        cancel_on_exit=settings.trading.cancel_on_exit,
        cancel_timeout=settings.trading.cancel_timeout,
        make_http=(
            (lambda components, state: build_http(settings, components, state))
            if settings.http.enabled
            else None
        ),
        reloader=reloader,
        risk=settings.risk.limits(),
        peaks=SqlPeakStore(database.runner, exchange.name),
    )
    bind_exchange_clock(metrics, exchange.name, exchange.clock_offset)
    metrics.instance_info.labels(settings.instance.id, settings.instance.role).set(1)
    service.metrics.registry.register(
        ServiceCollector(service.state.traders, exchange.stream_reconnects)
    )
    return service


async def run_daemon(settings: Settings, config_path: Path | None = None) -> RunResult:
    """Configure logging, build the service and run it until a signal arrives; SIGHUP
    and ``POST /api/reload`` read ``config_path`` again."""
    configure_logging(settings.logging.level, settings.logging.format, secret_values(settings))
    structlog.contextvars.bind_contextvars(instance=settings.instance.id)
    for warning in config_warnings(settings):
        log.warning("config_warning", warning=warning)
    service = build_service(settings, config_path=config_path)
    log.info(
        "starting",
        exchange=settings.exchange.name,
        role=settings.instance.role,
        symbols=[s.symbol for s in settings.symbols],
        database=settings.database.type,
        ownership=service.coordinator.status()["mode"],
    )
    result = await serve(service)
    log.info("stopped", failed=sorted(result.failed))
    return result


def check_database_exists(settings: Settings) -> None:
    """``quantmesh status`` must not create an empty SQLite database as a side effect."""
    db = settings.database
    if db.type == "sqlite":
        url = to_sqlalchemy_url(db.type, db.dsn.get_secret_value())
        path = Path(url.removeprefix("sqlite+aiosqlite:///"))
        if not path.exists():
            raise StartupError(f"no database at {path} yet: run `quantmesh run` first")


async def read_summaries(settings: Settings) -> list[SymbolSummary]:
    """What the database holds on each grid (``quantmesh status``), read directly, without
    the write buffer."""
    repository = build_sql_repository(settings, settings.exchange.name)
    await repository.start()
    try:
        return await repository.summaries()
    finally:
        await repository.close()


async def read_owners(settings: Settings) -> tuple[dict[str, str] | None, list[str]]:
    """Who trades each symbol now (the holder recorded by a live member), and a line on the
    fleet; ``None`` without a fleet. Lock server unreachable: "?" for each, and a note why."""
    lock = settings.distributed_lock
    if not lock.enabled:
        return None, []
    from quantmesh.coordination.servers import lock_server

    me = member_of(settings.instance.id, settings.instance.role, ())
    server = lock_server(settings)
    fleet = server.fleet(me, settings.exchange.name, settings.coordination.lease_ttl)
    try:
        members = {m.id: m for m in await fleet.members()}
        records = await fleet.owners()
    except LockError as exc:
        unknown = {s.symbol: "?" for s in settings.symbols}
        return unknown, [f"owners unknown: {exc}"]
    finally:
        await server.close()
    owners = {
        symbol: record.owner
        for symbol, record in records.items()
        if record.state == "held" and record.owner in members
    }
    fleet_line = ", ".join(
        f"{m.id} ({m.role})" for m in sorted(members.values(), key=lambda m: m.id)
    )
    return owners, [f"live instances: {fleet_line or 'none'}"]


__all__ = [
    "assemble",
    "build_service",
    "check_database_exists",
    "read_owners",
    "read_summaries",
    "run_daemon",
]
