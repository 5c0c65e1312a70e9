"""docker-compose.ha.yml (Redis) and docker-compose.etcd.yml (etcd, no Redis), and the
configurations they mount: Debian's docker-compose accepts each file, every mounted
QuantMesh config passes ``quantmesh check-config`` with the environment the service gets,
every environment variable a file sets is read, and Prometheus scrapes every instance."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantmesh.cli.sim_exchange import add_arguments, sim_settings
from tests.servers.base import require_binary

ROOT = Path(__file__).resolve().parent.parent
HA, ETCD = "docker-compose.ha.yml", "docker-compose.etcd.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose" / ".env.example"
PACKAGE_SOURCE = "\n".join(p.read_text() for p in (ROOT / "quantmesh").rglob("*.py"))


def _example_env() -> dict[str, str]:
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def _compose(
    compose_file: str, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    compose = require_binary("docker-compose")
    clean = {k: v for k, v in os.environ.items() if k not in _example_env()}
    return subprocess.run(
        [compose, "-f", str(ROOT / compose_file), *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module", params=[HA, ETCD])
def compose_file(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def resolved(compose_file: str) -> dict[str, Any]:
    result = _compose(compose_file, "config", env=_example_env())
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path or volume name, for every volume of the service."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):  # docker-compose 1.x prints "source:target[:mode]"
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        out[target] = source
    return out


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path, for the bind mounts (files and directories)."""
    return {t: Path(s) for t, s in _volumes(service).items() if s.startswith("/")}


def _host_path(service: dict[str, Any], path: str) -> Path:
    """The host file behind ``path`` in the service's container."""
    for target, source in _mounts(service).items():
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source / Path(path).relative_to(target)
    raise AssertionError(f"{path} is not mounted into the container")


def _config_of(service: dict[str, Any]) -> Path:
    """The host file of the settings an instance runs on (``run --config PATH``)."""
    command = service["command"]
    assert command[:2] == ["run", "--config"], command
    return _host_path(service, command[2])


def _quantmesh_services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in resolved["services"].items() if s["image"] == "quantmesh:latest"}


def _instances(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The QuantMesh daemons (``run``), with the raw YAML they run on as ``config``."""
    return {
        name: {**s, "config": yaml.safe_load(_config_of(s).read_text())}
        for name, s in _quantmesh_services(resolved).items()
        if s["command"][0] == "run"
    }


def _check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantmesh.cli", "check-config", str(path)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_is_valid(compose_file: str) -> None:
    result = _compose(compose_file, "config", "-q", env=_example_env())
    assert result.returncode == 0, result.stderr


def test_a_missing_secret_is_named(compose_file: str) -> None:
    env = _example_env()
    del env["POSTGRES_PASSWORD"]
    result = _compose(compose_file, "config", "-q", env=env)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


@pytest.mark.parametrize("compose_file", [HA], indirect=True)
def test_the_ha_layout_has_two_masters_a_standby_and_the_services_around(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    assert {"redis", "postgres", "nginx", "prometheus", "exchange-sim"} <= services.keys()
    configs = {name: s["config"] for name, s in _instances(resolved).items()}
    roles = {name: config["instance"]["role"] for name, config in configs.items()}
    symbols = {n: {s["symbol"] for s in c["trading"]["symbols"]} for n, c in configs.items()}
    assert roles == {"quantmesh-1": "master", "quantmesh-2": "master", "quantmesh-3": "standby"}
    assert not symbols["quantmesh-1"] & symbols["quantmesh-2"]
    assert symbols["quantmesh-3"] == symbols["quantmesh-1"] | symbols["quantmesh-2"]
    assert "--appendonly" in services["redis"]["command"]
    assert "healthcheck" in services["postgres"]


@pytest.mark.parametrize("compose_file", [ETCD], indirect=True)
def test_the_etcd_layout_has_three_members_and_two_masters_of_one_symbol(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    assert {"postgres", "prometheus", "exchange-sim"} <= services.keys()
    assert not any("redis" in name for name in services)
    members = {name: s for name, s in services.items() if name.startswith("etcd-")}
    assert len(members) == 3
    peers = ",".join(
        f"{n}={m['environment']['ETCD_INITIAL_ADVERTISE_PEER_URLS']}" for n, m in members.items()
    )
    for name, member in members.items():
        env = member["environment"]
        assert env["ETCD_NAME"] == name
        assert env["ETCD_INITIAL_CLUSTER"] == peers
        assert _volumes(member)[env["ETCD_DATA_DIR"]] == f"{name}-data"  # a named volume
        assert "etcdctl" in member["healthcheck"]["test"][1]
    clients = [m["environment"]["ETCD_ADVERTISE_CLIENT_URLS"] for m in members.values()]
    instances = _instances(resolved)
    assert {s["environment"]["INSTANCE_ID"] for s in instances.values()} == set(instances)
    for name, instance in instances.items():
        config = instance["config"]
        assert config["distributed_lock"]["type"] == "etcd"
        assert ["http://" + e for e in config["etcd"]["endpoints"]] == clients, name
        assert config["instance"]["role"] == "master"
        assert set(instance["depends_on"]) >= members.keys()
    symbols = [[s["symbol"] for s in i["config"]["trading"]["symbols"]] for i in instances.values()]
    assert len(instances) == 2 and symbols[0] == symbols[1]


def test_every_mounted_config_passes_check_config(resolved: dict[str, Any]) -> None:
    for name, service in _quantmesh_services(resolved).items():
        if service["command"][0] == "run":
            result = _check_config(_config_of(service), service.get("environment", {}))
            assert result.returncode == 0, f"{name}: {result.stderr}"
        else:  # the exchange simulator: its own flags and file
            parser = argparse.ArgumentParser()
            add_arguments(parser)
            args = parser.parse_args(service["command"][1:])
            args.config = _host_path(service, str(args.config))
            assert sim_settings(args).markets, name


def test_every_environment_variable_set_is_read(resolved: dict[str, Any]) -> None:
    for name, service in _quantmesh_services(resolved).items():
        files = [p for p in _mounts(service).values() if p.is_file()]
        if service["command"][0] == "run":
            files.append(_config_of(service))
        # the YAML values only: a ${NAME} in a comment reads nothing
        mounted = "\n".join(yaml.safe_dump(yaml.safe_load(p.read_text())) for p in files)
        for key in service.get("environment", {}):
            in_config = re.search(r"\$\{" + re.escape(key) + r"\b", mounted)
            in_program = f'"{key}"' in PACKAGE_SOURCE
            assert in_config or in_program, f"{name}: {key} is set but nothing reads it"


def test_prometheus_scrapes_every_instance_and_loads_the_alerts(resolved: dict[str, Any]) -> None:
    prometheus = resolved["services"]["prometheus"]
    path = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    path = path.partition("=")[2]
    config = yaml.safe_load(_host_path(prometheus, path).read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    instances = _instances(resolved)
    assert targets == {f"{name}:{s['config']['http']['port']}" for name, s in instances.items()}
    for rules in config["rule_files"]:
        assert _host_path(prometheus, str(Path(path).parent / rules)).is_file(), rules


@pytest.mark.parametrize("compose_file", [ETCD], indirect=True)
def test_the_etcd_config_on_the_database_alone_passes_check_config(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    """README "HA on the database alone": the etcd layout's config, its lock on PostgreSQL."""
    service = resolved["services"]["quantmesh-1"]
    config = yaml.safe_load(_config_of(service).read_text())
    config["distributed_lock"]["type"] = "postgres"
    del config["etcd"]
    path = tmp_path / "quantmesh.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _check_config(path, service["environment"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warning either


def test_the_ha_example_config_is_valid() -> None:
    env = {
        "INSTANCE_ID": "qm-eth-1",
        "BINANCE_API_KEY": "k",
        "BINANCE_SECRET": "s",
        "POSTGRES_PASSWORD": "p",
        "REDIS_PASSWORD": "r",
    }
    result = _check_config(ROOT / "config-ha-example.yaml", env)
    assert result.returncode == 0, result.stderr
    assert "distributed_lock:\n  enabled: true" in result.stdout
