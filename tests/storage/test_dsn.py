"""PostgreSQL DSNs that list several hosts (a primary and its replicas): the forms accepted,
what SQLAlchemy's asyncpg dialect makes of them, and one-line errors for the bad ones.

Connecting through them, and a failover, is ``test_pg_failover``.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import make_url
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from structlog.testing import capture_logs

from quantmesh.errors import StartupError, StorageUnavailable
from quantmesh.storage.engine import create_engine_for, to_sqlalchemy_url
from quantmesh.storage.repository import SqlRepository
from tests.support import free_port

PASSWORD = "s3cr3t-pw"
TWO_HOSTS = "postgresql+asyncpg://q:p@/q?host=a%2Cb&port=5432%2C5433"
READ_WRITE = "target_session_attrs=read-write"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        # libpq key/value lists: one port per host, or one for all, or the default
        (
            "host=a,b port=5432,5433 user=q password=p dbname=q",
            TWO_HOSTS,
        ),
        (
            f"host=a,b port=6432 user=q password=p dbname=q {READ_WRITE}",
            f"postgresql+asyncpg://q:p@/q?host=a%2Cb&port=6432%2C6432&{READ_WRITE}",
        ),
        (
            "host='a, b' user=q password=p dbname=q",
            "postgresql+asyncpg://q:p@/q?host=a%2Cb&port=5432%2C5432",
        ),
        # libpq URLs: host[:port] list before the database
        ("postgresql://q:p@a:5432,b:5433/q", TWO_HOSTS),
        (
            f"postgresql+asyncpg://q:p@a,b:5433/q?{READ_WRITE}",
            f"postgresql+asyncpg://q:p@/q?host=a%2Cb&port=5432%2C5433&{READ_WRITE}",
        ),
        (
            "postgres://q:p@[::1]:5432,[fd00::2]/q",
            "postgresql+asyncpg://q:p@/q?host=%3A%3A1%2Cfd00%3A%3A2&port=5432%2C5432",
        ),
        # SQLAlchemy's two query forms
        ("postgresql+asyncpg://q:p@/q?host=a:5432&host=b:5433", TWO_HOSTS),
        ("postgresql://q:p@/q?host=a,b&port=5432,5433", TWO_HOSTS),
        # one host stays as it was, target_session_attrs passed on
        (
            f"host=a port=5433 user=q dbname=q {READ_WRITE}",
            f"postgresql+asyncpg://q@a:5433/q?{READ_WRITE}",
        ),
        (
            "postgresql+asyncpg://q:p@/q?host=/run/postgresql",
            "postgresql+asyncpg://q:p@/q?host=%2Frun%2Fpostgresql",
        ),
        (
            "postgresql+asyncpg://q:p@localhost/q?host=/run/postgresql",
            "postgresql+asyncpg://q:p@localhost/q?host=%2Frun%2Fpostgresql",
        ),
        # a password holding the list's separators is not split
        (
            "postgresql://q:a,b:c@a:5432,b:5433/q",
            "postgresql+asyncpg://q:a%2Cb%3Ac@/q?host=a%2Cb&port=5432%2C5433",
        ),
    ],
)
def test_several_hosts_in_each_form(dsn: str, expected: str) -> None:
    url = to_sqlalchemy_url("postgres", dsn)
    assert url == expected
    assert to_sqlalchemy_url("postgres", url) == url  # what we made reads back the same
    create_engine_for("postgres", url)  # and makes an engine


def test_the_asyncpg_dialect_gets_the_hosts_as_lists() -> None:
    url = to_sqlalchemy_url("postgres", f"postgresql://q:p@a:5432,b:5433/q?{READ_WRITE}")
    _, params = PGDialect_asyncpg().create_connect_args(make_url(url))  # type: ignore[no-untyped-call]
    assert params["host"] == ["a", "b"]
    assert params["port"] == [5432, 5433]
    assert params["target_session_attrs"] == "read-write"


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        (
            f"host=a,b port=1,2,3 password={PASSWORD}",
            "key 'port' lists 3 ports for 2 hosts; give one port for all hosts or one per host",
        ),
        (f"host=a,b port=5432,x password={PASSWORD}", "invalid port in 'port'"),
        (f"host=a port=0 password={PASSWORD}", "invalid port in 'port'"),
        (f"host=a,,b password={PASSWORD}", "key 'host' has an empty entry"),
        (f"host=a target_session_attrs=master password={PASSWORD}", "'target_session_attrs'"),
        (f"host=a connect_timeout=soon password={PASSWORD}", "'connect_timeout'"),
        (f"postgresql://q:{PASSWORD}@a,b/q?timeout=-1", "'connect_timeout' (in a URL: 'timeout')"),
        (f"postgresql://q:{PASSWORD}@a:5432,b:http/q", "invalid port in 'host'"),
        (f"postgresql://q:{PASSWORD}@a:5432,b:70000/q", "invalid port in 'host'"),
        (f"postgresql://q:{PASSWORD}@a:5432,/q", "key 'host' has an empty entry"),
        (f"postgresql://q:{PASSWORD}@[::1:5432,b/q", "IPv6 address without its ']'"),
        (f"postgresql://q:{PASSWORD}@a:70000/q", "invalid port"),
        (f"postgresql://q:{PASSWORD}@a/q?target_session_attrs=rw", "'target_session_attrs'"),
        (f"postgresql://q:{PASSWORD}@a,b/q?host=c", "lists hosts both"),
        (f"postgresql://q:{PASSWORD}@a/q?host=b,c", "use one of the two"),
        (f"postgresql://q:{PASSWORD}@/q?host=a:1&host=b:2&port=3", "give each host its port"),
        (f"postgresql://q:{PASSWORD}@/q?host=a,b&port=1&port=2", "repeats the 'port'"),
        (
            f"postgresql://q:{PASSWORD}@a,b/q?prepared_statement_cache_size=0",
            "'prepared_statement_cache_size' needs a single host",
        ),
    ],
)
def test_bad_host_lists_are_one_line_startup_errors_naming_the_key(dsn: str, message: str) -> None:
    with pytest.raises(StartupError) as info:
        create_engine_for("postgres", dsn)
    text = str(info.value)
    assert message in text
    assert PASSWORD not in text
    assert "\n" not in text
    assert "target_session_attrs" not in message or "read-write" in text  # lists the choices


async def test_no_reachable_host_is_a_one_line_startup_error_without_the_password() -> None:
    dsn = (
        f"host=127.0.0.1,127.0.0.1 port={free_port()},{free_port()} user=q "
        f"password={PASSWORD} dbname=q {READ_WRITE} connect_timeout=2"
    )
    with capture_logs() as logs:
        repo = SqlRepository(create_engine_for("postgres", dsn), "binance")
        try:
            async with asyncio.timeout(20):
                with pytest.raises(StartupError, match=r"check database\.dsn") as info:
                    await repo.start()
        finally:
            await repo.close()
    assert isinstance(info.value.__cause__, StorageUnavailable)
    assert "\n" not in str(info.value)
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(logs)
    assert len([e for e in logs if e["event"] == "db_host_skipped"]) >= 2  # both were tried
