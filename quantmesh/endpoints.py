"""The HTTP endpoints of a service: its readiness checks and status sections, wired from
the settings and the components the service runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from quantmesh.app import Components, ServiceState
from quantmesh.config import Settings
from quantmesh.lock.health import lock_check, lock_status
from quantmesh.observability.control_api import ControlApi
from quantmesh.observability.health import Check, Health
from quantmesh.observability.http import HttpServer
from quantmesh.observability.page import page_routes
from quantmesh.observability.reload_api import ReloadApi
from quantmesh.observability.status import (
    buffer_check,
    exchange_clock_status,
    prices_check,
    service_status,
    traders_check,
)
from quantmesh.storage.base import DurabilityReport


def build_health(settings: Settings, components: Components, state: ServiceState) -> Health:
    """The readiness checks of ``/readyz``: one per part that must work to trade."""
    health = Health()
    traders = state.traders
    health.register("traders", lambda: traders_check(traders, state.result.failed))
    locker = components.locker
    health.register("lock", lambda: lock_check(locker.health()))
    max_age = settings.exchange.price_stale_after
    health.register("prices", lambda: prices_check(traders, max_age))
    repository = components.repository
    if repository.durability() is not None:  # a write buffer: its fill level and journal
        health.register("database", lambda: database_check(repository.durability()))
    return health


def database_check(report: DurabilityReport | None) -> Check:
    """The write buffer's readiness check, from the repository's durability report."""
    if report is None:
        return Check(True, "no write buffer")
    return buffer_check(report.pending, report.in_memory, report.capacity, report.volatile)


def component_sections(components: Components) -> dict[str, Callable[[], Any]]:
    """The ``/api/status`` sections of the components: ownership, lock backend, the
    exchange's clock, write buffer."""
    exchange, locker = components.exchange, components.locker
    sections: dict[str, Callable[[], Any]] = {
        "ownership": components.coordinator.status,
        "lock": lambda: lock_status(locker.health()),
        "exchange_clock": lambda: exchange_clock_status(exchange.clock_offset()),
    }
    repository = components.repository
    if repository.durability() is not None:
        sections["database"] = lambda: database_section(repository.durability())
    return sections


def database_section(report: DurabilityReport | None) -> dict[str, int]:
    """The ``database`` section of ``/api/status``: what the write buffer holds."""
    if report is None:
        return {"buffered_writes": 0, "in_memory": 0}
    return {"buffered_writes": report.pending, "in_memory": report.in_memory}


def build_http(settings: Settings, components: Components, state: ServiceState) -> HttpServer:
    """The HTTP endpoints of a service, reading its components and its shared state."""
    sections = {**component_sections(components), **reload_sections(state)}
    instance: dict[str, Any] = {
        "instance": settings.instance.id,
        "role": settings.instance.role,
        "exchange": components.exchange.name,
    }
    traders = state.traders
    return HttpServer(
        settings.http.host,
        settings.http.port,
        registry=components.metrics.registry,
        health=build_health(settings, components, state),
        status=lambda: service_status(instance, traders, sections),
        token=settings.http.token.get_secret_value(),
        routes=[*page_routes(), *control_routes(settings, components), *reload_routes(state)],
    )


def control_routes(settings: Settings, components: Components) -> list[web.RouteDef]:
    """``POST /api/symbols/{symbol}/{action}`` and ``GET /api/controls`` over the board."""
    if components.controls is None:
        return []
    configured = {symbol.symbol for symbol in settings.symbols}
    coordinator = components.coordinator

    def known_symbols() -> set[str]:
        return configured.union(*(member.symbols for member in coordinator.members))

    api = ControlApi(
        components.controls, known_symbols=known_symbols, owned=lambda: coordinator.owned
    )
    return api.routes()


def reload_routes(state: ServiceState) -> list[web.RouteDef]:
    """``POST /api/reload`` over the service's reload (none without a settings file)."""
    return [] if state.reload is None else ReloadApi(state.reload).routes()


def reload_sections(state: ServiceState) -> dict[str, Callable[[], Any]]:
    """The ``reload`` section of ``/api/status``: the last reload (null before the first)."""
    if state.reload is None:
        return {}
    return {"reload": lambda: None if state.last_reload is None else state.last_reload.as_json()}
