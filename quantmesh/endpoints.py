"""The HTTP endpoints of a service: its readiness checks and status sections, wired from
the settings and the components the service runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quantmesh.app import Service
from quantmesh.config import Settings
from quantmesh.lock.health import lock_check, lock_status
from quantmesh.observability.health import Health
from quantmesh.observability.http import HttpServer
from quantmesh.observability.status import (
    buffer_check,
    exchange_clock_status,
    prices_check,
    service_status,
    traders_check,
)
from quantmesh.storage.buffer import BufferedRepository


def build_health(settings: Settings, service: Service) -> Health:
    """The readiness checks of ``/readyz``: one per part that must work to trade."""
    health = Health()
    traders = service.traders
    health.register("traders", lambda: traders_check(traders, service.result.failed))
    health.register("lock", lambda: lock_check(service.locker.health()))
    max_age = settings.exchange.price_stale_after
    health.register("prices", lambda: prices_check(traders, max_age))
    repository = service.repository
    if isinstance(repository, BufferedRepository):
        buffered = repository
        capacity = settings.database.buffer_size
        health.register(
            "database",
            lambda: buffer_check(
                buffered.pending, buffered.memory_records, capacity, buffered.volatile
            ),
        )
    return health


def component_sections(service: Service) -> dict[str, Callable[[], Any]]:
    """The ``/api/status`` sections of the components: ownership, lock backend, the
    exchange's clock, write buffer."""
    exchange = service.exchange
    sections: dict[str, Callable[[], Any]] = {
        "ownership": service.coordinator.status,
        "lock": lambda: lock_status(service.locker.health()),
        "exchange_clock": lambda: exchange_clock_status(exchange.clock_offset()),
    }
    repository = service.repository
    if isinstance(repository, BufferedRepository):
        buffered = repository
        sections["database"] = lambda: {
            "buffered_writes": buffered.pending,
            "in_memory": buffered.memory_records,
        }
    return sections


def build_http(settings: Settings, service: Service) -> HttpServer:
    sections = component_sections(service)
    instance: dict[str, Any] = {
        "instance": settings.instance.id,
        "role": settings.instance.role,
        "exchange": service.exchange.name,
    }
    return HttpServer(
        settings.http.host,
        settings.http.port,
        registry=service.metrics.registry,
        health=build_health(settings, service),
        status=lambda: service_status(instance, service.traders, sections),
        token=settings.http.token.get_secret_value(),
    )
