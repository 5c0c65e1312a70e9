"""The seed's Go-style DSNs, turned into SQLAlchemy URLs.

The seed's YAML examples are the user's interface, so they load as written:

- PostgreSQL, libpq key/value: ``host=localhost port=5432 user=q password=secret
  dbname=q sslmode=disable`` (values may be single-quoted, ``\\'`` and ``\\\\`` escaped);
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
    {"host", "hostaddr", "port", "user", "password", "dbname", "sslmode", "connect_timeout"}
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
    return URL.create(
        driver,
        username=values.get("user") or None,
        password=values.get("password") or None,
        host=values.get("host") or values.get("hostaddr") or None,
        port=_port(values.get("port"), "postgres"),
        database=values.get("dbname") or None,
        query=query,
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
        port = _port(port_text or None, "mysql")
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


def _port(text: str | None, db_type: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise StartupError(f"the {db_type} DSN has an invalid port {text!r}")
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
