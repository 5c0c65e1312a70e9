"""Pre-flight warnings: settings that are valid but carry a risk, one line each.

``config_warnings(settings)`` lists them in the ``path: message`` form of the settings'
problems; ``check-config`` prints them to stderr (``warning: ...``) and still exits 0,
``run`` logs them at start. A warning may need to know another component's limits (which
exchanges enforce a request expiry), so it lives above ``config``, not in it.
"""

from __future__ import annotations

import ipaddress

from quantmesh.config import Settings

__all__ = ["config_warnings"]


def config_warnings(settings: Settings) -> list[str]:
    """Valid settings that carry a risk worth a line each: ``path: what and why``."""
    warnings: list[str] = []
    http = settings.http
    if http.enabled and not _loopback(http.host) and not http.token.get_secret_value():
        warnings.append(
            f"http.host: {http.host} is not a loopback address and http.token is empty: "
            "/api/status is readable by anyone who reaches it, and state-changing endpoints "
            "are refused; set http.token (e.g. ${QUANTMESH_HTTP_TOKEN}) or bind to 127.0.0.1"
        )
    warnings.extend(_unused_lock_server(settings))
    warnings.extend(_database_lock(settings))
    name = settings.exchange.name
    if settings.distributed_lock.enabled and name != "simulated":
        from quantmesh.exchange.ccxt import expiry

        if expiry.expiry_mechanism(name) is None:
            warnings.append(
                f"exchange.name: {name} requests carry no expiry the exchange enforces, "
                "and with distributed_lock.enabled a symbol can move to another instance: "
                "a request delayed past its ownership lease (a frozen process, a slow "
                "network) may still execute there after another instance took the symbol "
                "over"
            )
    return warnings


# The section that says how to reach each lock server (``distributed_lock.type``).
_SERVER_SECTIONS = ("redis", "etcd")


def _unused_lock_server(settings: Settings) -> list[str]:
    """With the lock on, the sections of the lock servers it does not use: a line each,
    so a fleet meant to share one server is not left on another by a forgotten ``type``.
    (Alone, with the lock off, a section kept for later is harmless.)"""
    lock = settings.distributed_lock
    if not lock.enabled:
        return []
    return [
        f"{section}: set but not used (distributed_lock.type is {lock.type}): this "
        f"instance shares its locks on {lock.type}, not {section}; set "
        f"distributed_lock.type: {section} if every instance of the fleet should use it, "
        "or remove the section"
        for section in _SERVER_SECTIONS
        if section != lock.type and section in settings.model_fields_set
    ]


def _database_lock(settings: Settings) -> list[str]:
    """A database lock (``distributed_lock.type`` postgres or mysql) needs its table, which
    the schema migration creates: without ``auto_migrate`` the lock halts on a database
    not migrated yet."""
    lock = settings.distributed_lock
    if not lock.enabled or lock.type not in ("postgres", "mysql") or settings.database.auto_migrate:
        return []
    warning = (
        f"database.auto_migrate: false, and distributed_lock.type {lock.type} keeps its "
        "leases in the database's lock_leases table (schema revision 0006): run `quantmesh "
        "db upgrade` before starting, or the lock is down (fallback_mode applies) until the "
        "table exists"
    )
    return [warning]


def _loopback(host: str) -> bool:
    """Whether ``host`` (an ``http.host``) is reachable from this machine only."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
