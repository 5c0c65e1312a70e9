"""The seed's Go-style DSNs, turned into SQLAlchemy URLs.

The seed's YAML examples are the user's interface, so they load as written:

- PostgreSQL, libpq key/value: ``host=localhost port=5432 user=q password=secret
  dbname=q sslmode=disable`` (values may be single-quoted, ``\\'`` and ``\\\\`` escaped);
  several hosts as libpq lists them, ``host=a,b port=5432,5433
  target_session_attrs=read-write`` (one port for all hosts, or one per host);
- PostgreSQL URLs with several hosts, libpq's ``postgresql://u:p@a:5432,b:5432/db`` and
  SQLAlchemy's ``?host=a:5432&host=b:5432`` or ``?host=a,b&port=5432,5432``: all become
  the last form, which SQLAlchemy's asyncpg dialect hands to ``asyncpg.connect`` as lists
  (asyncpg tries the hosts in order and keeps the first that suits
  ``target_session_attrs``);
- MySQL, go-sql-driver: ``user:pass@tcp(host:3306)/db?charset=utf8mb4&parseTime=true``
  (also ``unix(/path/to.sock)``; Go-only parameters such as ``parseTime`` and ``loc`` are
  dropped, ``timeout`` becomes ``connect_timeout``).

Pure functions, no I/O. Error messages name the offending key, never a value (it may be
the password).
"""

from __future__ import annotations

import re
from typing import Final, Literal
from urllib.parse import parse_qsl, unquote

from sqlalchemy import URL

from quantmesh.errors import StartupError

DbType = Literal["sqlite", "postgres", "mysql"]

_PG_KEYS: Final = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "user",
        "password",
        "dbname",
        "sslmode",
        "connect_timeout",
        "target_session_attrs",
    }
)
PG_DEFAULT_PORT: Final = 5432
# asyncpg's SessionAttribute values (libpq's, less "prefer-standby" which is asyncpg's own)
TARGET_SESSION_ATTRS: Final = (
    "any",
    "primary",
    "standby",
    "prefer-standby",
    "read-write",
    "read-only",
)
# scheme://[user[:password]@]hosts[/database][?query], split as SQLAlchemy's own URL pattern
# splits it (a user has no ':' or '/', a password no '@')
_PG_URL_PARTS: Final = re.compile(
    r"^(?P<head>[\w+]+://(?:[^:/]*(?::[^@]*)?@)?)(?P<hosts>[^/?]*)(?P<tail>.*)$", re.DOTALL
)
_PG_PAIR: Final = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")
# go-sql-driver parameters that mean nothing to aiomysql
_GO_ONLY: Final = frozenset(
    {"parseTime", "loc", "allowNativePasswords", "multiStatements", "interpolateParams", "tls"}
)
_GO_MYSQL: Final = re.compile(
    r"^(?:(?P<user>[^:@]*)(?::(?P<password>.*))?@)?"
    r"(?:(?P<net>tcp|unix)\((?P<addr>[^)]*)\))?"
    r"/(?P<db>[^?]*)(?:\?(?P<query>.*))?$",
    re.DOTALL,
)


def looks_like_key_value(dsn: str) -> bool:
    return _PG_PAIR.match(dsn) is not None and "=" in dsn.split()[0]


def postgres_url(dsn: str, driver: str) -> URL:
    """``host=... user=... dbname=...`` as a PostgreSQL URL for ``driver``."""
    values: dict[str, str] = {}
    pos = 0
    text = dsn.strip()
    while pos < len(text):
        match = _PG_PAIR.match(text, pos)
        if match is None or match.end() == pos:
            raise StartupError(
                "cannot parse the postgres DSN: expected key=value pairs such as "
                "'host=localhost user=quantmesh password=... dbname=quantmesh'"
            )
        key, raw = match.group(1), match.group(2)
        if key not in _PG_KEYS:
            raise StartupError(
                f"the postgres DSN key {key!r} is not supported; use "
                f"{', '.join(sorted(_PG_KEYS))} or a SQLAlchemy URL"
            )
        values[key] = _unquote(raw)
        pos = match.end()
    query: dict[str, str] = {}
    if "sslmode" in values:
        query["ssl"] = values["sslmode"]
    if "connect_timeout" in values:
        query["timeout"] = values["connect_timeout"]
    if "target_session_attrs" in values:
        query["target_session_attrs"] = values["target_session_attrs"]
    url = URL.create(
        driver,
        username=values.get("user") or None,
        password=values.get("password") or None,
        database=values.get("dbname") or None,
        query=query,
    )
    hosts = _host_list(values.get("host") or values.get("hostaddr") or "")
    ports = _port_list(values.get("port") or "", len(hosts))
    return _with_hosts(url, list(zip(hosts or [""], ports, strict=True)))


def postgres_url_text(text: str) -> tuple[str, list[tuple[str, int | None]]]:
    """A PostgreSQL URL written with libpq's host list (``scheme://u:p@a:5432,b/db``): the
    URL without its hosts, for ``make_url``, and the hosts with their ports. A URL with one
    host (or none) comes back as it is, with no hosts."""
    match = _PG_URL_PARTS.match(text)
    if match is None or "," not in match.group("hosts"):
        return text, []
    hosts = [_host_port(token) for token in _host_list(match.group("hosts"))]
    return match.group("head") + match.group("tail"), hosts


def postgres_hosts(url: URL, hosts: list[tuple[str, int | None]] | None = None) -> URL:
    """``url`` (parsed; ``hosts`` from ``postgres_url_text``) with its several hosts
    checked and written as ``?host=a,b&port=5432,5433``, and ``target_session_attrs``
    checked. A URL with one host is left as it is. Raises ``StartupError`` naming the key,
    never a value."""
    _check_session_attrs(url)
    if url.port is not None:
        _port(str(url.port), "postgres", "port")
    if hosts:
        if url.host or "host" in url.query or "port" in url.query:
            raise StartupError(
                "the postgres URL lists hosts both before the database name and in its "
                "'host'/'port' parameters; use one of the two"
            )
        return _with_hosts(url, hosts)
    if "host" not in url.query:
        return url
    tokens = url.query["host"]
    if isinstance(tokens, str):  # host=a,b&port=1,2 (or one host, maybe a socket directory)
        names = _host_list(tokens)
        raw_ports = url.query.get("port", "")
        if not isinstance(raw_ports, str):
            raise StartupError("the postgres URL repeats the 'port' parameter; use port=p1,p2")
        ports = _port_list(raw_ports, len(names))
        if len(names) <= 1:  # it replaces the URL's host, as SQLAlchemy takes it
            return url
    elif "port" in url.query:  # SQLAlchemy's error; say it in our words
        raise StartupError(
            "the postgres URL mixes host=h1:p1&host=h2:p2 with a 'port' parameter; "
            "give each host its port"
        )
    if url.host or url.port:
        raise StartupError(
            "the postgres URL has a host before the database name and several 'host' "
            "parameters; use one of the two"
        )
    if isinstance(tokens, str):
        return _with_hosts(url, list(zip(names, ports, strict=True)))
    return _with_hosts(url, [_host_port(token) for token in tokens])


def _with_hosts(url: URL, hosts: list[tuple[str, int | None]]) -> URL:
    """``url`` at ``hosts``: one host as usual, several as ``?host=...&port=...`` (every
    port given: SQLAlchemy's asyncpg dialect requires them all)."""
    _check_session_attrs(url)
    query = {k: v for k, v in url.query.items() if k not in ("host", "port")}
    if len(hosts) <= 1:
        host, port = hosts[0] if hosts else (None, None)
        return url.set(host=host or None, port=port, query=query)
    query["host"] = ",".join(host for host, _ in hosts)
    query["port"] = ",".join(str(port or PG_DEFAULT_PORT) for _, port in hosts)
    return url.set(host=None, port=None, query=query)


def _host_list(text: str) -> list[str]:
    """``a,b`` as ``["a", "b"]``; ``""`` as no host."""
    if not text.strip():
        return []
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise StartupError("the postgres DSN key 'host' has an empty entry in its list")
    return names


def _port_list(text: str, hosts: int) -> list[int | None]:
    """``5432,5433`` for ``hosts`` hosts, one per host; a single port serves them all, as
    in libpq."""
    if not text.strip():
        return [None] * max(hosts, 1)
    ports = [_port(part.strip() or "-", "postgres", "port") for part in text.split(",")]
    if len(ports) == 1:
        return ports * max(hosts, 1)
    if len(ports) != hosts:
        raise StartupError(
            f"the postgres DSN key 'port' lists {len(ports)} ports for {hosts} hosts; "
            "give one port for all hosts or one per host"
        )
    return ports


def _host_port(token: str) -> tuple[str, int | None]:
    """``a:5432``, ``a``, ``[::1]:5432`` as a host and its port (None: the default)."""
    token = token.strip()
    if token.startswith("["):
        host, bracket, rest = token[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise StartupError("the postgres DSN key 'host' has an IPv6 address without its ']'")
        return host, _port(rest[1:] or "-", "postgres", "host") if rest else None
    if token.count(":") == 1:
        host, _, port = token.partition(":")
        if not host:
            raise StartupError("the postgres DSN key 'host' has an empty entry in its list")
        return host, _port(port or "-", "postgres", "host")
    if not token:
        raise StartupError("the postgres DSN key 'host' has an empty entry in its list")
    return token, None


def _check_session_attrs(url: URL) -> None:
    value = url.query.get("target_session_attrs")
    if value is not None and value not in TARGET_SESSION_ATTRS:
        raise StartupError(
            "the postgres DSN key 'target_session_attrs' must be one of "
            f"{', '.join(TARGET_SESSION_ATTRS)}"
        )


def mysql_url(dsn: str, driver: str) -> URL:
    """``user:pass@tcp(host:3306)/db?charset=utf8mb4`` as a MySQL URL for ``driver``."""
    match = _GO_MYSQL.match(dsn.strip())
    if match is None:
        raise StartupError(
            "cannot parse the mysql DSN: expected user:password@tcp(host:3306)/dbname "
            "or a SQLAlchemy URL"
        )
    host: str | None = None
    port: int | None = None
    query: dict[str, str] = {}
    addr = match.group("addr") or ""
    if match.group("net") == "unix":
        query["unix_socket"] = addr
    elif addr:
        host, _, port_text = addr.rpartition(":") if ":" in addr else (addr, "", "")
        port = _port(port_text or None, "mysql", "tcp(host:port)")
    for key, value in parse_qsl(match.group("query") or "", keep_blank_values=True):
        if key in _GO_ONLY:
            continue
        if key == "timeout":  # Go duration ("5s") -> seconds
            query["connect_timeout"] = value.removesuffix("s")
        else:
            query[key] = value
    return URL.create(
        driver,
        username=unquote(match.group("user") or "") or None,
        password=match.group("password") or None,
        host=host or "localhost",
        port=port,
        database=match.group("db") or None,
        query=query,
    )


def _unquote(raw: str) -> str:
    if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def _port(text: str | None, db_type: str, where: str) -> int | None:
    """``text`` as a port; ``where`` names the key or part of the DSN it was read from."""
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:  # the value is not shown: it may be
        # a password that a missing quote or '@' put where the port goes
        raise StartupError(f"the {db_type} DSN has an invalid port in {where!r} (1-65535)")
    return int(text)


def guess_type(dsn: str) -> DbType:
    """The database type a DSN is written for: ``sqlite``, ``postgres`` or ``mysql``.

    URL schemes decide (``postgresql+asyncpg://`` -> postgres); otherwise libpq key/value
    pairs are PostgreSQL, ``@tcp(``/``@unix(`` is MySQL, and anything else a SQLite path.
    """
    text = dsn.strip()
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme.startswith("sqlite"):
            return "sqlite"
        if scheme.startswith("postgres"):
            return "postgres"
        if scheme.startswith(("mysql", "mariadb")):
            return "mysql"
        raise StartupError(f"unknown database URL scheme {scheme!r}")
    if re.search(r"@(tcp|unix)\(|@/", text):
        return "mysql"
    if looks_like_key_value(text):
        return "postgres"
    return "sqlite"
