"""The deployment files are checked by the tools that will read them: hadolint, promtool,
nginx, systemd-analyze. Each tool is a Debian package (``.ci/run`` installs it) or a dev
dependency; without one the check skips, except under ``CI=true``, where it fails."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from prometheus_client import generate_latest

from quantmesh.observability.collectors import ServiceCollector
from quantmesh.observability.metrics import Metrics
from tests.servers.base import require_binary

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VENV_BIN = ROOT / ".venv" / "bin"


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def _exported_names() -> set[str]:
    """Every metric family the daemon exports, by the names a query uses."""
    registry = Metrics().registry
    registry.register(ServiceCollector([]))
    text = generate_latest(registry).decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            if kind == "counter":
                names.add(name.removesuffix("_total") + "_total")
    return names


def _queried_names(text: str) -> set[str]:
    return set(re.findall(r"\bquantmesh_[a-z0-9_]+", text))


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = require_binary("hadolint", str(VENV_BIN / "hadolint"))
    result = _run([hadolint, "--failure-threshold", "info", "Dockerfile"], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_are_valid_and_fire_when_they_should() -> None:
    promtool = require_binary("promtool")
    checked = _run([promtool, "check", "config", "prometheus.yml"], DEPLOY / "prometheus")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run([promtool, "test", "rules", "alerts_test.yml"], DEPLOY / "prometheus")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alerts_and_dashboard_query_only_metrics_the_daemon_exports() -> None:
    exported = _exported_names()
    for path in (DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "grafana" / "quantmesh.json"):
        unknown = _queried_names(path.read_text()) - exported
        assert not unknown, f"{path.name} queries metrics nobody exports: {sorted(unknown)}"


def test_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "quantmesh.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert all(t["expr"] for t in panel["targets"]), panel["title"]


def test_nginx_config_is_accepted_by_nginx(tmp_path: Path) -> None:
    nginx = require_binary("nginx", "/usr/sbin/nginx")
    result = _run(
        [
            nginx,
            "-t",
            "-e",
            "stderr",
            "-p",
            str(tmp_path),
            "-c",
            str(DEPLOY / "nginx" / "nginx.conf"),
        ]
    )
    assert result.returncode == 0, result.stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    quantmesh = shutil.which("quantmesh") or str(VENV_BIN / "quantmesh")
    unit = (DEPLOY / "systemd" / "quantmesh@.service").read_text()
    assert "/opt/quantmesh/bin/quantmesh" in unit
    copy = tmp_path / "quantmesh@.service"
    copy.write_text(unit.replace("/opt/quantmesh/bin/quantmesh", quantmesh))
    result = _run([analyze, "verify", str(copy)])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
