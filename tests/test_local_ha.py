"""``deploy/local/ha.py`` end to end: the compose HA layout as local processes.

One run of the script (Redis, PostgreSQL, the exchange simulator, two masters and a
standby, configs generated from ``deploy/compose``): every instance becomes ready, every
``/metrics`` scrape passes ``promtool check metrics``, each master places orders on its own
symbols only, the standby places none, the exchange never accepted one client order id
twice while open, and SIGTERM stops everything with exit code 0 and no process left.

A second run (``--keep-going``) kills one master with SIGKILL: the standby takes its symbols
over within the lease, counts the failovers, and no order is ever open twice.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from tests.cli.support import parse_event
from tests.exchange.sim.server.support import duplicates
from tests.ha_fleet import (
    HA,
    ROOT,
    Run,
    accepted_twice_while_open,
    get,
    started,
    status_of,
    symbol_of,
    token,
    wait_ready,
)
from tests.servers.base import port_open, require_binary, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def ha() -> Iterator[Run]:
    with started() as run:
        yield run


@pytest.fixture
def ha_keep_going() -> Iterator[Run]:
    """The fleet with ``--keep-going``: an instance killed by the test is reported, and the
    rest run on."""
    with started("--keep-going") as run:
        yield run


def _promtool_check(promtool: str, name: str, text: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"


def _placed_bysymbol_of(metrics: str) -> dict[str, float]:
    """Orders placed per symbol, from a scrape's ``quantmesh_orders_placed_total``."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("quantmesh_orders_placed_total{"):
            labels, _, value = line.rpartition(" ")
            symbol = labels.split('symbol="', 1)[1].split('"', 1)[0]
            out[symbol] = out.get(symbol, 0.0) + float(value)
    return {s: v for s, v in out.items() if v > 0}


def _log_events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(errors="replace").splitlines()
    return [e for e in map(parse_event, lines) if e is not None]


def test_the_local_ha_layout_serves_trades_apart_and_stops_cleanly(ha: Run) -> None:
    promtool = require_binary("promtool")
    instances = ha.info["instances"]
    owned = {name: {symbol_of(s) for s in i["symbols"]} for name, i in instances.items()}
    masters = [n for n, i in instances.items() if i["role"] == "master"]
    standbys = [n for n, i in instances.items() if i["role"] == "standby"]
    assert len(masters) == 2 and len(standbys) == 1, instances
    assert not owned[masters[0]] & owned[masters[1]]

    for name, instance in instances.items():
        ready = wait_ready(ha, name, instance["readyz"], 30)
        assert ready["checks"]["lock"]["ok"] and ready["checks"]["database"]["ok"], ready
    sim = ha.info["exchange_sim"]

    def every_master_symbol_traded() -> bool:
        symbols = {o["symbol"] for o in json.loads(get(f"{sim}/_sim/orders")[1])}
        return owned[masters[0]] | owned[masters[1]] <= symbols

    wait_until(every_master_symbol_traded, 20, "orders on every master's symbols", interval=0.2)

    for name, instance in instances.items():
        status, text = get(instance["metrics"])
        assert status == 200, text
        _promtool_check(promtool, name, text)
        placed = _placed_bysymbol_of(text)
        if name in standbys:
            assert placed == {}, f"the standby {name} placed orders: {placed}"
        else:
            assert set(placed) == owned[name], f"{name} placed on {placed}"
        code, body = get(instance["status"], token())
        assert code == 200, body
        assert json.loads(body)["role"] == instance["role"]

    orders = json.loads(get(f"{sim}/_sim/orders")[1])
    assert accepted_twice_while_open(orders) == []
    assert duplicates(orders) == []

    ha.proc.send_signal(signal.SIGTERM)
    assert ha.proc.wait(40) == 0, ha.output()
    assert "stopped" in ha.output()

    # Every order the exchange holds is in the log of the master owning its symbol and in no
    # other instance's log.
    logs = {
        name: Path(ha.info["processes"][name]["log"]).read_text(errors="replace")
        for name in instances
    }
    for order in orders:
        cid, symbol = order["client_order_id"], order["symbol"]
        holders = [name for name, text in logs.items() if f'"{cid}"' in text]
        owner = [name for name in masters if symbol in owned[name]]
        assert holders == owner, f"{cid} ({symbol}) in the logs of {holders}, owned by {owner}"
    for name in instances:
        events = _log_events(Path(ha.info["processes"][name]["log"]))
        placed_on = {e["symbol"] for e in events if e["event"] == "order_placed"}
        assert placed_on <= (owned[name] if name in masters else set()), (name, placed_on)
        assert events[-1]["event"] == "stopped", (name, events[-1])

    for name, process in ha.info["processes"].items():
        with pytest.raises(ProcessLookupError):
            os.killpg(process["pid"], 0)  # the whole process group is gone
        assert not port_open("127.0.0.1", process["port"]), f"{name} still listens"
    generated = yaml.safe_load((ha.workdir / masters[0] / "config.yaml").read_text())
    assert generated["redis"]["addr"] == ha.info["redis"]


def _failovers(metrics: str) -> dict[str, float]:
    """``quantmesh_failovers_total`` per symbol, from a scrape."""
    out = {}
    for line in metrics.splitlines():
        if line.startswith("quantmesh_failovers_total{"):
            labels, _, value = line.rpartition(" ")
            out[labels.split('symbol="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def test_the_standby_takes_over_a_killed_masters_symbols(ha_keep_going: Run) -> None:
    run = ha_keep_going
    instances = run.info["instances"]
    symbols = {name: {symbol_of(s) for s in i["symbols"]} for name, i in instances.items()}
    masters = sorted(n for n, i in instances.items() if i["role"] == "master")
    (standby,) = [n for n, i in instances.items() if i["role"] == "standby"]
    victim, survivor = masters
    config = yaml.safe_load(Path(instances[standby]["config"]).read_text())
    lease_ttl = float(config["coordination"]["lease_ttl"])
    check_interval = float(config["coordination"]["check_interval"])
    for name, instance in instances.items():
        wait_ready(run, name, instance["readyz"], 30)

    def settled() -> bool:
        """Each master owns and trades its symbols with open orders; the standby none."""
        assert run.proc.poll() is None, f"ha.py exited:\n{run.output()}"
        for name in masters:
            status = status_of(instances[name]["status"])
            if set(status["ownership"]["owned"]) != symbols[name]:
                return False
            views = [status["symbols"].get(s, {}) for s in symbols[name]]
            if not all(v.get("trading") and v.get("open_orders", 0) > 0 for v in views):
                return False
        owned: list[str] = status_of(instances[standby]["status"])["ownership"]["owned"]
        return owned == []

    wait_until(settled, 30, "the masters to own and trade their symbols", interval=0.2)

    os.killpg(run.info["processes"][victim]["pid"], signal.SIGKILL)
    killed = time.monotonic()
    bound = lease_ttl + check_interval + 5.0  # the lease lapses, a retry, a trader's start
    while True:
        assert run.proc.poll() is None, f"ha.py exited after {victim} died:\n{run.output()}"
        status = status_of(instances[standby]["status"])
        owned = set(status["ownership"]["owned"])
        trading = {s for s, v in status["symbols"].items() if v["trading"]}
        took = time.monotonic() - killed
        if symbols[victim] <= owned and symbols[victim] <= trading:
            break
        assert took < bound, f"{standby} after {took:.1f} s: owns {owned}, trades {trading}"
        time.sleep(0.2)
    print(f"{standby} trades {sorted(symbols[victim])} {took:.1f} s after {victim} was killed")
    assert owned == symbols[victim], status["ownership"]
    taken = {f["symbol"]: f["from"] for f in status["ownership"]["recent_failovers"]}
    assert taken == dict.fromkeys(symbols[victim], victim), status["ownership"]
    assert victim not in status["ownership"]["members"], status["ownership"]
    code, text = get(instances[standby]["metrics"])
    assert code == 200, text
    failovers = _failovers(text)
    assert all(failovers.get(s, 0) >= 1 for s in symbols[victim]), failovers
    # every configured symbol is exported from the start, at 0; only the victim's moved
    assert {s for s, n in failovers.items() if n > 0} == symbols[victim], failovers
    assert get(instances[standby]["readyz"])[0] == 200

    # The survivor kept its symbols; the standby left them alone.
    assert set(status_of(instances[survivor]["status"])["ownership"]["owned"]) == symbols[survivor]
    # Once the standby has reconciled and traded a while, no order was ever open twice.
    time.sleep(2)
    orders = json.loads(get(f"{run.info['exchange_sim']}/_sim/orders")[1])
    assert {o["symbol"] for o in orders} >= symbols[victim]
    assert accepted_twice_while_open(orders) == []
    assert duplicates(orders) == []

    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(40) == 1, run.output()  # an instance died: reported, exit code 1
    printed = run.out.read_text(errors="replace").splitlines()
    errors = [line for line in printed if line.startswith("ha: error:")]
    assert errors and all(line.startswith(f"ha: error: {victim} exited") for line in errors), (
        run.output()
    )
    assert "stopped" in run.output()
    for name, process in run.info["processes"].items():
        with pytest.raises(ProcessLookupError):
            os.killpg(process["pid"], 0)
        assert not port_open("127.0.0.1", process["port"]), f"{name} still listens"


def _ha_module() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_local_ha", HA)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_compose_config_that_changed_shape_is_refused(tmp_path: Path) -> None:
    """ha.py rewrites the compose hostnames it knows; a config naming another host, or no
    longer naming one it replaces, stops it instead of running a different layout."""
    ha = _ha_module()
    ports = ha.Ports(1, 2, 3, {"quantmesh-1": 4})
    source = ROOT / "deploy" / "compose" / "quantmesh-1.yaml"
    config = ha.local_config(source, ports, 4, tmp_path)
    assert config["redis"]["addr"] == "127.0.0.1:1"
    assert "@127.0.0.1:2/quantmesh" in config["database"]["dsn"]
    assert config["exchange"]["urls"]["api"]["public"] == "http://127.0.0.1:3/api/v3"
    assert config["http"] == {"host": "127.0.0.1", "port": 4, "token": "${QUANTMESH_HTTP_TOKEN}"}
    assert config["database"]["journal_path"] == f"{tmp_path}/journal.jsonl"

    changed = tmp_path / "deploy" / "compose"
    changed.mkdir(parents=True)
    text = source.read_text()
    for old, new in (("redis:6379", "valkey:6379"), ("@postgres:5432", "@db:5432")):
        (changed / "q.yaml").write_text(text.replace(old, new))
        with mock.patch.object(ha, "ROOT", tmp_path), pytest.raises(ha.HaError) as refused:
            ha.local_config(changed / "q.yaml", ports, 4, tmp_path)
        assert "no longer mentions" in str(refused.value)
    for extra in ("url: http://redis:6380/0", "state: /var/lib/quantmesh"):
        (changed / "q.yaml").write_text(f"{text}\nextra: {{{extra}}}\n")
        with mock.patch.object(ha, "ROOT", tmp_path), pytest.raises(ha.HaError) as refused:
            ha.local_config(changed / "q.yaml", ports, 4, tmp_path)
        assert "names a compose host or path" in str(refused.value)


def test_a_missing_server_binary_names_the_debian_package() -> None:
    ha = _ha_module()
    message = "initdb is not installed (looked on PATH and at ['/usr/lib/postgresql/15/bin'])"
    assert ha._missing_binary(message) == (
        "initdb is not installed: install it (Debian: apt-get install postgresql)"
    )
    assert ha._missing_binary("redis-server is not installed (looked ...); CI must").endswith(
        "apt-get install redis-server)"
    )
