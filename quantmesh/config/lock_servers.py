"""The lock-server sections: ``distributed_lock`` (which server a fleet shares, and how its
locks behave), and how to reach Redis (``redis``) and etcd (``etcd``); the database locks
use the ``database`` section itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, field_validator, model_validator

from quantmesh.config.fields import Count, NonNegativeInt, Seconds, Section
from quantmesh.config.problems import FieldProblems


class LockTTLSettings(Section):
    place: Seconds = 5.0
    cancel: Seconds = 3.0
    reconcile: Seconds = 30.0


# The lock servers a fleet can share (``distributed_lock.type``), each with one factory in
# ``quantmesh.coordination.servers``. Redis and etcd have a section of their own saying how
# to reach them (``redis:``, ``etcd:``); ``postgres`` and ``mysql`` keep the locks in the
# fleet's own database (``database:``, whose ``type`` must be the same).
LockServerType = Literal["redis", "etcd", "postgres", "mysql"]
DATABASE_LOCKS: tuple[str, ...] = ("postgres", "mysql")
# lock_leases.name holds 255 characters: the prefix, then at most about 120 of key (a
# level's ``order:<exchange>:<symbol>:<index>``, a fleet's ``{fleet:<exchange>}:members/<id>``)
DATABASE_LOCK_PREFIX_MAX = 100


class DistributedLockSettings(Section):
    enabled: bool = False
    type: LockServerType = "redis"
    fallback_mode: Literal["halt", "single_instance"] = "halt"
    health_check_interval: Seconds = 10.0
    key_prefix: str = "quantmesh:lock:"
    granularity: Literal["symbol", "level", "exact"] = "level"
    ttl: LockTTLSettings = LockTTLSettings()

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        # Braces are allowed but make the prefix the Redis Cluster hash tag of every key:
        # still correct, all in one slot.
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be non-empty, without spaces, e.g. quantmesh:lock:")
        return value


def _host_port(value: str, example: str = "localhost:6379") -> str:
    """``host:port`` or ``[ipv6]:port``, stripped; ValueError otherwise."""
    host, sep, port = value.strip().rpartition(":")
    ipv6 = host.startswith("[") and host.endswith("]") and len(host) > 2
    plain_host = bool(host) and not any(c in host for c in "[]:/ ")
    if not sep or not (ipv6 or plain_host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port, e.g. {example} (got {value!r})")
    return value.strip()


class RedisSettings(Section):
    """How to reach Redis: one server (``url`` or ``addr``), Sentinel, or Cluster."""

    url: SecretStr | None = None
    addr: str = "localhost:6379"
    password: SecretStr = SecretStr("")
    username: str | None = None
    db: NonNegativeInt = 0
    pool_size: Count = 10
    mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    # sentinel: the Sentinels' addresses; cluster: seed nodes (default: addr).
    addrs: tuple[str, ...] = ()
    master_name: str = "mymaster"  # the Sentinel service name
    sentinel_password: SecretStr = SecretStr("")
    tls: bool = False  # for addr/addrs; a url says it with rediss://
    socket_timeout: Seconds = 1.0  # every command's reply must arrive within this
    connect_timeout: Seconds = 1.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = value.get_secret_value().partition("://")[0].lower()
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        return _host_port(value)

    @field_validator("addrs")
    @classmethod
    def _check_addrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_host_port(addr) for addr in value)

    @model_validator(mode="after")
    def _check_mode(self) -> RedisSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.url is not None and self.mode != "standalone":
            where = f"only for mode standalone; list the {self.mode} nodes in redis.addrs"
            problems.append((("url",), where))
        if self.mode == "sentinel" and not self.addrs:
            problems.append((("addrs",), "required for mode sentinel: the Sentinels' host:port"))
        if self.mode == "cluster" and self.db != 0:
            problems.append((("db",), "must be 0 for mode cluster (Redis Cluster has one db)"))
        if problems:
            raise FieldProblems(problems)
        return self


_ETCD_EXAMPLE = "10.0.0.1:2379"


def _etcd_endpoint(value: str) -> str:
    """``host:port`` or ``http(s)://host:port`` -> the member's client URL; ValueError
    otherwise (a URL carries no user, password or path: see ``etcd.username``)."""
    text = value.strip()
    if "://" not in text:
        return "http://" + _host_port(text, _ETCD_EXAMPLE)
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be host:port or an http(s):// URL (got {scheme}://)")
    if "@" in rest:
        raise ValueError("must carry no user or password: set etcd.username and etcd.password")
    address = rest.removesuffix("/")
    if "/" in address or "?" in address:
        raise ValueError(f"must be the member's client URL without a path (got {text!r})")
    return f"{scheme.lower()}://{_host_port(address, _ETCD_EXAMPLE)}"


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read by this process, or None."""
    if not path.exists():
        return f"no file at {path}"
    if not path.is_file():
        return f"{path} is not a file"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user"
    return None


class EtcdSettings(Section):
    """How to reach etcd (``distributed_lock.type: etcd``): the cluster's members, each
    request tried on the next member when one does not answer. With ``https://`` endpoints,
    the CA the members' certificates are checked against (default: the system's trust
    store) and the client certificate members started with ``--client-cert-auth`` require.
    The files must exist and be readable when the settings are read; whether they hold
    what they should is known when the TLS context is built (``coordination.servers``)."""

    # host:port or http(s)://host:port of each member's client URL
    endpoints: tuple[str, ...] = ()
    username: str | None = None  # with etcd's authentication enabled
    password: SecretStr = SecretStr("")
    connect_timeout: Seconds = 1.0  # each new connection to a member
    request_timeout: Seconds = 1.0  # every request's reply must arrive within this
    ca_file: Path | None = None  # PEM: the CA that signed the members' certificates
    cert_file: Path | None = None  # PEM: the client certificate, with key_file
    key_file: Path | None = None  # PEM: its private key, unencrypted

    @field_validator("endpoints", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_etcd_endpoint(endpoint) for endpoint in value)

    @model_validator(mode="after")
    def _check_user(self) -> EtcdSettings:
        if self.password.get_secret_value() and not self.username:
            raise FieldProblems([(("username",), "required when etcd.password is set")])
        if self.username and not self.password.get_secret_value():
            raise FieldProblems([(("password",), "required when etcd.username is set")])
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> EtcdSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.cert_file is not None and self.key_file is None:
            problems.append((("key_file",), "required when etcd.cert_file is set"))
        if self.key_file is not None and self.cert_file is None:
            problems.append((("cert_file",), "required when etcd.key_file is set"))
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        named = {key: path for key, path in files.items() if path is not None}
        plain = [e for e in self.endpoints if not e.startswith("https://")]
        if named and plain:
            first = next(iter(named))
            message = (
                f"must be https:// URLs: TLS files need https:// endpoints (etcd.{first} is "
                f"set; {plain[0]} is plain HTTP, and host:port alone means http)"
            )
            problems.append((("endpoints",), message))
        for key, path in named.items():
            problem = _file_problem(path)
            if problem is not None:
                problems.append(((key,), problem))
        if problems:
            raise FieldProblems(problems)
        return self
