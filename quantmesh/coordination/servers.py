"""The lock server a fleet shares, one factory per ``distributed_lock.type``.

A ``LockServer`` is what an instance keeps on that server, over one client: the lock
(level locks and ownership leases, health-checked by ``FailoverLock``), the fleet store
(membership heartbeats and ownership records) and the election of who sends a fleet
event. Closing the lock closes the client.

- ``redis``: ``RedisLock``, ``Fleet`` and ``RedisElection`` over one redis-py client
  (``redis:`` settings);
- ``etcd``: ``EtcdLock``, ``EtcdFleet`` and ``EtcdElection`` over one ``EtcdGateway``
  (``etcd:`` settings, TLS from ``etcd_tls``); redis-py is never imported.

- ``postgres``, ``mysql``: ``SqlLock``, ``SqlFleet`` and ``SqlElection`` in the
  ``lock_leases`` table of the instance's own database (``database.dsn``; ``check-config``
  refuses any other ``database.type``), over one engine of the lock's own.

Adding a backend is one function ``Settings -> LockServer`` and its entry in
``LOCK_SERVERS``. Each factory imports its client when called, so a lone instance loads
none of them.

The database lock's engine is its own, not the repository's pool, though both reach the
same server on the same DSN:

- timeouts: the repository waits up to ``database.statement_timeout`` (30 s) for a
  statement or a free connection, right for a batch of writes and wrong for a lock. The
  lock's engine answers within ``SQL_LOCK_TIMEOUT`` (a statement, its connection
  included) and ``SQL_FLEET_TIMEOUT`` (a fleet transaction), so a hung database halts
  placing (fail closed) within about a second instead of holding the trader; with several
  hosts in the DSN (a primary and its replicas) each host gets its share of
  ``SQL_LOCK_TIMEOUT`` to connect, so a dead first host leaves time for the next;
- no queueing behind the repository: a write buffer replaying thousands of rows, or a
  slow report, holds the repository's connections; the lock's leases must still renew
  in time or the instance loses its symbols;
- lifetime: closing the lock disposes its engine (the fleet's and the election's too),
  independently of the repository's shutdown, which flushes writes first.

Its sessions are bounded on the server too, so a process frozen (SIGSTOP, a VM paused)
in the middle of a fleet transaction cannot keep a row locked against the fleet: an open
transaction left idle is ended by the server after ``SQL_IDLE_IN_TRANSACTION``
(PostgreSQL ``idle_in_transaction_session_timeout``, MariaDB ``idle_transaction_timeout``;
MySQL has none), and a row lock is waited for at most ``SQL_FLEET_TIMEOUT`` (PostgreSQL
``statement_timeout``, InnoDB ``innodb_lock_wait_timeout``).

It costs up to ``SQL_LOCK_CONNECTIONS`` + ``SQL_FLEET_CONNECTIONS`` connections per
instance beside ``database.max_open_conns``: count them in the server's
``max_connections``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from quantmesh.config import Settings
from quantmesh.coordination.allocation import Member
from quantmesh.coordination.membership import FleetStore
from quantmesh.errors import StartupError
from quantmesh.lock.failover import CheckedLock
from quantmesh.notify.election import Election

if TYPE_CHECKING:
    import ssl

    from sqlalchemy.ext.asyncio import AsyncEngine

    from quantmesh.config.lock_servers import EtcdSettings

# The database lock's engine (postgres, mysql): see the module docstring.
SQL_LOCK_TIMEOUT: Final = 1.0  # one lock statement, opening its connection included
SQL_FLEET_TIMEOUT: Final = 2.0  # one fleet transaction (a heartbeat, an ownership record)
SQL_LOCK_CONNECTIONS: Final = 8  # the lock's own, kept open between calls
SQL_FLEET_CONNECTIONS: Final = 2  # the fleet store's, from the same engine's pool
SQL_IDLE_IN_TRANSACTION: Final = 5  # seconds a session may sit in an open transaction


@dataclass(frozen=True, slots=True)
class LockServer:
    """One lock server's lock, fleet store and election. ``fleet(me, exchange, ttl)`` and
    ``election(instance, window, fallback)`` build on the lock's client."""

    name: str  # distributed_lock.type, as /api/status and the lock metrics name it
    lock: CheckedLock
    fleet: Callable[[Member, str, float], FleetStore]
    election: Callable[[str, float, Callable[[], bool]], Election]

    async def close(self) -> None:
        """Close the client (the lock owns it)."""
        await self.lock.close()


def redis_server(settings: Settings) -> LockServer:
    """Redis (standalone, Sentinel or Cluster), as ``redis:`` says."""
    from quantmesh.coordination.fleet import Fleet
    from quantmesh.lock.connection import redis_client
    from quantmesh.lock.redis import RedisLock
    from quantmesh.notify.election import RedisElection

    prefix = settings.distributed_lock.key_prefix
    client = redis_client(settings.redis)

    def fleet(me: Member, exchange: str, ttl: float) -> FleetStore:
        return Fleet(client, prefix=prefix, exchange=exchange, me=me, ttl=ttl)

    def election(instance: str, window: float, fallback: Callable[[], bool]) -> Election:
        return RedisElection(
            client, prefix=prefix, instance=instance, window=window, fallback=fallback
        )

    return LockServer("redis", RedisLock(client, prefix=prefix), fleet, election)


def etcd_server(settings: Settings) -> LockServer:
    """An etcd cluster, through its members' JSON gateway, as ``etcd:`` says."""
    from quantmesh.coordination.fleet_etcd import EtcdFleet
    from quantmesh.lock.etcd import EtcdGateway, EtcdLock
    from quantmesh.notify.election import EtcdElection

    etcd = settings.etcd
    prefix = settings.distributed_lock.key_prefix
    client = EtcdGateway(
        etcd.endpoints,
        request_timeout=etcd.request_timeout,
        connect_timeout=etcd.connect_timeout,
        username=etcd.username,
        password=etcd.password.get_secret_value(),
        ssl_context=etcd_tls(etcd),
    )

    def fleet(me: Member, exchange: str, ttl: float) -> FleetStore:
        return EtcdFleet(client, prefix=prefix, exchange=exchange, me=me, ttl=ttl)

    def election(instance: str, window: float, fallback: Callable[[], bool]) -> Election:
        return EtcdElection(
            client, prefix=prefix, instance=instance, window=window, fallback=fallback
        )

    return LockServer("etcd", EtcdLock(client, prefix=prefix), fleet, election)


class _EncryptedKey(Exception):
    """The key file asked for a passphrase (raised instead of OpenSSL's prompt)."""


def _no_passphrase() -> str:
    raise _EncryptedKey


def etcd_tls(etcd: EtcdSettings) -> ssl.SSLContext | None:
    """The TLS context of etcd's ``https://`` endpoints: the members' certificates checked
    against ``ca_file`` (else the system's trust store), and the client certificate
    ``cert_file`` with its ``key_file``; None when none of the three is set. A file that
    does not hold what it should raises ``StartupError`` naming its key and path. The
    settings checked that the files exist and are readable; an encrypted key is refused,
    never prompted for."""
    if etcd.ca_file is None and etcd.cert_file is None:
        return None
    import ssl

    key, path = "ca_file", etcd.ca_file
    try:
        context = ssl.create_default_context(cafile=None if path is None else str(path))
        if etcd.cert_file is not None and etcd.key_file is not None:
            key, path = "cert_file", etcd.cert_file
            # checked alone first, so that a failure of the pair below is the key's
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
            key, path = "key_file", etcd.key_file
            context.load_cert_chain(str(etcd.cert_file), str(path), password=_no_passphrase)
    except _EncryptedKey:
        raise StartupError(
            f"etcd.key_file: {path} is encrypted; give it unencrypted (openssl pkey -in "
            f"{path} -out NEW), readable by this user only"
        ) from None
    except ssl.SSLError as exc:
        raise StartupError(f"etcd.{key}: {path} {_pem_problem(key, exc)}") from None
    except OSError as exc:
        raise StartupError(f"etcd.{key}: cannot read {path}: {exc.strerror}") from None
    return context


def _pem_problem(key: str, exc: ssl.SSLError) -> str:
    """What is wrong with the file of ``etcd.<key>`` that OpenSSL refused, and what to do."""
    reason = exc.reason or "not PEM"
    if key == "ca_file":
        return (
            f"holds no PEM certificate ({reason}): point it at the CA certificate that "
            "signed the etcd members' certificates"
        )
    if key == "cert_file":
        return f"holds no PEM certificate ({reason}): point it at the client certificate"
    return (
        f"is not the PEM private key of etcd.cert_file ({reason}): point it at the key the "
        "client certificate was issued for"
    )


def sql_engine(settings: Settings) -> AsyncEngine:
    """The database lock's own engine on ``database.dsn``, with the lock's short timeouts
    and a pool of ``SQL_LOCK_CONNECTIONS + SQL_FLEET_CONNECTIONS``. Nothing connects yet."""
    from sqlalchemy.ext.asyncio import AsyncEngine

    from quantmesh.storage.engine import bound_sessions, create_engine_for

    db = settings.database
    if db.type not in ("postgres", "mysql"):  # check-config refuses it: never on SQLite
        raise ValueError(f"the database lock needs postgres or mysql, not {db.type}")
    dsn = db.dsn.get_secret_value()
    engine = create_engine_for(
        db.type,
        dsn,
        pool_size=SQL_LOCK_CONNECTIONS + SQL_FLEET_CONNECTIONS,
        max_overflow=0,
        pool_recycle=db.conn_max_lifetime,
        connect_timeout=min(db.connect_timeout, SQL_LOCK_TIMEOUT / _hosts(db.type, dsn)),
        statement_timeout=SQL_FLEET_TIMEOUT,
    )
    assert isinstance(engine, AsyncEngine)  # a server's engine is always async
    bound_sessions(engine, idle_in_transaction=SQL_IDLE_IN_TRANSACTION, lock_wait=SQL_FLEET_TIMEOUT)
    return engine


def _hosts(db_type: str, dsn: str) -> int:
    """How many hosts a new connection may try in turn (a PostgreSQL primary and its
    replicas): each gets its share of the lock's timeout, so a host that drops packets (its
    machine gone) leaves time to reach the next one within one lock call."""
    if db_type != "postgres":
        return 1
    from sqlalchemy import make_url

    from quantmesh.storage.engine import to_sqlalchemy_url

    host = make_url(to_sqlalchemy_url("postgres", dsn)).query.get("host")
    if isinstance(host, tuple):
        return max(1, len(host))
    return max(1, len(host.split(","))) if isinstance(host, str) else 1


def sql_server(settings: Settings) -> LockServer:
    """The instance's own PostgreSQL or MySQL/MariaDB database (``database:``), whose
    ``type`` is ``distributed_lock.type``: leases, membership and ownership records in its
    ``lock_leases`` table (migration 0006)."""
    from quantmesh.coordination.fleet_sql import SqlFleet
    from quantmesh.lock.sql import SqlElection, SqlLock

    prefix = settings.distributed_lock.key_prefix
    engine = sql_engine(settings)
    lock = SqlLock(
        engine, prefix=prefix, request_timeout=SQL_LOCK_TIMEOUT, pool_size=SQL_LOCK_CONNECTIONS
    )

    def fleet(me: Member, exchange: str, ttl: float) -> FleetStore:
        return SqlFleet(engine, prefix=prefix, exchange=exchange, me=me, ttl=ttl,
                        request_timeout=SQL_FLEET_TIMEOUT)  # fmt: skip

    def election(instance: str, window: float, fallback: Callable[[], bool]) -> Election:
        del instance  # the lease's token is the lock's own, unique per process
        return SqlElection(lock, window=window, fallback=fallback)

    return LockServer(lock.dialect, lock, fleet, election)


LOCK_SERVERS: Final[Mapping[str, Callable[[Settings], LockServer]]] = {
    "redis": redis_server,
    "etcd": etcd_server,
    "postgres": sql_server,
    "mysql": sql_server,
}


def lock_server(settings: Settings) -> LockServer:
    """The server ``distributed_lock.type`` names. Nothing connects yet: the first call
    or health check does."""
    return LOCK_SERVERS[settings.distributed_lock.type](settings)
