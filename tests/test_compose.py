"""docker-compose.ha.yml and the configurations it mounts: Debian's docker-compose accepts
the file, every mounted QuantMesh config passes ``quantmesh check-config`` with the
environment the service gets, and every environment variable the file sets is read."""

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
COMPOSE = ROOT / "docker-compose.ha.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose" / ".env.example"
PACKAGE_SOURCE = "\n".join(p.read_text() for p in (ROOT / "quantmesh").rglob("*.py"))


def _example_env() -> dict[str, str]:
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    compose = require_binary("docker-compose")
    clean = {k: v for k, v in os.environ.items() if k not in _example_env()}
    return subprocess.run(
        [compose, "-f", str(COMPOSE), *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    result = _compose("config", env=_example_env())
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path, for the bind mounts (files and directories)."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):  # docker-compose 1.x prints "source:target[:mode]"
            source, target = volume.split(":")[:2]
        elif volume.get("type") == "bind":
            source, target = volume["source"], volume["target"]
        else:
            continue
        if source.startswith("/"):
            out[target] = Path(source)
    return out


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


def test_compose_file_is_valid() -> None:
    result = _compose("config", "-q", env=_example_env())
    assert result.returncode == 0, result.stderr


def test_a_missing_secret_is_named() -> None:
    env = _example_env()
    del env["POSTGRES_PASSWORD"]
    result = _compose("config", "-q", env=env)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


def test_the_ha_layout_has_two_masters_a_standby_and_the_services_around(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    assert {"redis", "postgres", "nginx", "prometheus", "exchange-sim"} <= services.keys()
    roles = {}
    symbols = {}
    for name in ("quantmesh-1", "quantmesh-2", "quantmesh-3"):
        config = yaml.safe_load(_config_of(services[name]).read_text())
        roles[name] = config["instance"]["role"]
        symbols[name] = {s["symbol"] for s in config["trading"]["symbols"]}
    assert roles == {"quantmesh-1": "master", "quantmesh-2": "master", "quantmesh-3": "standby"}
    assert not symbols["quantmesh-1"] & symbols["quantmesh-2"]
    assert symbols["quantmesh-3"] == symbols["quantmesh-1"] | symbols["quantmesh-2"]
    assert "--appendonly" in services["redis"]["command"]
    assert "healthcheck" in services["postgres"]


def test_every_mounted_config_passes_check_config(resolved: dict[str, Any]) -> None:
    for name, service in _quantmesh_services(resolved).items():
        env = {**os.environ, **service.get("environment", {})}
        if service["command"][0] == "run":
            result = subprocess.run(
                [sys.executable, "-m", "quantmesh.cli", "check-config", str(_config_of(service))],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
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
        mounted = "\n".join(p.read_text() for p in files)
        for key in service.get("environment", {}):
            in_config = re.search(r"\$\{" + re.escape(key) + r"\b", mounted)
            in_program = f'"{key}"' in PACKAGE_SOURCE
            assert in_config or in_program, f"{name}: {key} is set but nothing reads it"


def test_the_ha_example_config_is_valid() -> None:
    env = {
        **os.environ,
        "INSTANCE_ID": "qm-eth-1",
        "BINANCE_API_KEY": "k",
        "BINANCE_SECRET": "s",
        "POSTGRES_PASSWORD": "p",
        "REDIS_PASSWORD": "r",
    }
    result = subprocess.run(
        [sys.executable, "-m", "quantmesh.cli", "check-config", "config-ha-example.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "distributed_lock:\n  enabled: true" in result.stdout
