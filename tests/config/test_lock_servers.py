"""``distributed_lock.type``, the ``etcd`` section and the database locks (``postgres``,
``mysql``, on the instance's own database): what check-config accepts, refuses (one line
each, in ``test_problems``) and warns about."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantmesh.config import load_settings, parse_settings
from quantmesh.errors import ConfigError
from quantmesh.preflight import config_warnings
from quantmesh.wiring import secret_values

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = "trading: {symbols: [{symbol: ETHUSDT, price_interval: 10}]}\n"


def server_warnings(text: str) -> list[str]:
    settings = parse_settings(SYMBOLS + text, env={})
    return [w for w in config_warnings(settings) if w.startswith(("redis", "etcd"))]


def test_redis_stays_the_default_lock_server() -> None:
    settings = parse_settings(SYMBOLS + "distributed_lock: {enabled: true}\n", env={})
    assert settings.distributed_lock.type == "redis"
    assert settings.etcd.endpoints == ()


def test_etcd_endpoints_are_host_port_or_urls_and_one_may_stand_alone() -> None:
    settings = parse_settings(
        SYMBOLS + "distributed_lock: {enabled: true, type: etcd}\n"
        "etcd: {endpoints: 'etcd-1:2379', request_timeout: 0.5}\n",
        env={},
    )
    assert settings.etcd.endpoints == ("http://etcd-1:2379",)
    assert settings.etcd.request_timeout == 0.5
    cluster = parse_settings(
        SYMBOLS + "etcd: {endpoints: ['[::1]:2379', 'HTTPS://etcd-2:2379']}\n", env={}
    )
    assert cluster.etcd.endpoints == ("http://[::1]:2379", "https://etcd-2:2379")


def test_a_lock_server_section_the_lock_does_not_use_is_one_warning() -> None:
    assert server_warnings(
        "distributed_lock: {enabled: true, type: etcd}\n"
        "etcd: {endpoints: ['127.0.0.1:2379']}\nredis: {addr: 'redis-1:6379'}\n"
    ) == [
        (
            "redis: set but not used (distributed_lock.type is etcd): this instance shares its "
            "locks on etcd, not redis; set distributed_lock.type: redis if every instance of the "
            "fleet should use it, or remove the section"
        )
    ]
    assert server_warnings(
        "distributed_lock: {enabled: true}\netcd: {endpoints: ['127.0.0.1:2379']}\n"
    ) == [
        (
            "etcd: set but not used (distributed_lock.type is redis): this instance shares its "
            "locks on redis, not etcd; set distributed_lock.type: etcd if every instance of the "
            "fleet should use it, or remove the section"
        )
    ]
    # alone, with the lock off, a section kept for later is no concern
    assert server_warnings("etcd: {endpoints: ['127.0.0.1:2379']}\nredis: {addr: 'r:6379'}\n") == []


def test_the_etcd_deployment_example_loads_without_warnings() -> None:
    env = {
        "INSTANCE_ID": "quantmesh-1",
        "EXCHANGE_API_KEY": "k",
        "EXCHANGE_SECRET": "s",
        "POSTGRES_PASSWORD": "p",
        "QUANTMESH_HTTP_TOKEN": "t",
    }
    settings = load_settings(ROOT / "deploy" / "etcd" / "quantmesh.yaml", env=env)
    assert settings.distributed_lock.type == "etcd"
    assert settings.etcd.endpoints == tuple(f"http://etcd-{i}:2379" for i in (1, 2, 3))
    assert settings.fleet is not None
    assert config_warnings(settings) == []


def test_the_etcd_password_is_a_secret_the_logs_redact() -> None:
    settings = parse_settings(
        SYMBOLS + "distributed_lock: {enabled: true, type: etcd}\n"
        "etcd: {endpoints: ['127.0.0.1:2379'], username: qm, password: 'ETCD-PW-31337'}\n",
        env={},
    )
    assert "ETCD-PW-31337" in secret_values(settings)
    assert "ETCD-PW-31337" not in repr(settings)


PG = "database: {type: postgres, dsn: 'postgresql://qm:DB-PW-4242@db-1:5432/qm'}\n"
MY = "database: {type: mysql, dsn: 'qm:DB-PW-4242@tcp(db-1:3306)/qm'}\n"


def test_a_database_lock_is_accepted_on_its_own_kind_of_database() -> None:
    for kind, database in (("postgres", PG), ("mysql", MY)):
        text = f"distributed_lock: {{enabled: true, type: {kind}}}\n{database}"
        settings = parse_settings(SYMBOLS + "instance: {total: 2}\n" + text, env={})
        assert settings.distributed_lock.type == kind
        assert settings.fleet is not None  # a fleet on its database alone: no redis, no etcd
        assert config_warnings(settings) == []


def test_a_database_lock_refusal_never_shows_the_dsn_password() -> None:
    for text in (
        "distributed_lock: {enabled: true, type: mysql}\n" + PG,
        "distributed_lock: {enabled: true, type: postgres}\n" + MY,
    ):
        with pytest.raises(ConfigError) as caught:
            parse_settings(SYMBOLS + text, env={})
        assert len(caught.value.problems) == 1
        assert caught.value.problems[0].startswith("distributed_lock.type: ")
        assert "DB-PW-4242" not in str(caught.value)


def test_a_fleet_on_sqlite_is_refused_once_whatever_the_lock_type() -> None:
    text = "instance: {total: 2}\ndistributed_lock: {enabled: true, type: postgres}\n"
    with pytest.raises(ConfigError) as caught:
        parse_settings(SYMBOLS + text, env={})
    assert caught.value.problems == [
        (
            "database.type: must be postgres or mysql: instance.total is 2, and a SQLite file "
            "is not shared between instances"
        )
    ]


def test_a_database_lock_without_auto_migrate_is_one_warning() -> None:
    settings = parse_settings(
        SYMBOLS
        + "distributed_lock: {enabled: true, type: postgres}\n"
        + PG.replace("}", ", auto_migrate: false}")
        + "redis: {addr: 'redis-1:6379'}\n",
        env={},
    )
    assert config_warnings(settings) == [
        (
            "redis: set but not used (distributed_lock.type is postgres): this instance shares "
            "its locks on postgres, not redis; set distributed_lock.type: redis if every "
            "instance of the fleet should use it, or remove the section"
        ),
        (
            "database.auto_migrate: false, and distributed_lock.type postgres keeps its leases "
            "in the database's lock_leases table (schema revision 0006): run `quantmesh db "
            "upgrade` before starting, or the lock is down (fallback_mode applies) until the "
            "table exists"
        ),
    ]
