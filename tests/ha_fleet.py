"""``deploy/local/ha.py`` driven from tests: the compose HA layout (Redis, PostgreSQL, the
exchange simulator, two masters and a standby) as local processes, and what the tests ask
of it - its instances' status and configs, the simulator's orders, the ``quantmesh`` command
run as a person on one of the hosts would run it."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cli.support import Result, clean_env, run_cli
from tests.servers.base import require_binary, wait_until
from tests.servers.postgres import PG_BIN_DIRS
from tests.servers.redis import cli_binary, redis_binary

ROOT = Path(__file__).resolve().parent.parent
HA = ROOT / "deploy" / "local" / "ha.py"
ENV_EXAMPLE = ROOT / "deploy" / "compose" / ".env.example"


@dataclass
class Run:
    """The running script: its process, its directory and ``ha.json``."""

    proc: subprocess.Popen[str]
    workdir: Path
    out: Path
    info: dict[str, Any]

    def output(self) -> str:
        return self.out.read_text(errors="replace")[-4000:]

    def alive(self) -> None:
        """Fails with the script's output when it has exited."""
        assert self.proc.poll() is None, f"ha.py exited {self.proc.returncode}:\n{self.output()}"

    def instance(self, name: str) -> dict[str, Any]:
        instance: dict[str, Any] = self.info["instances"][name]
        return instance

    def status(self, name: str) -> dict[str, Any]:
        """``/api/status`` of one instance (with the fleet's token)."""
        return status_of(self.instance(name)["status"])

    def orders(self) -> list[dict[str, Any]]:
        """Every order the exchange simulator has accepted."""
        orders: list[dict[str, Any]] = json.loads(
            get(f"{self.info['exchange_sim']}/_sim/orders")[1]
        )
        return orders

    def trades(self) -> list[dict[str, Any]]:
        """Every fill the exchange simulator has made."""
        trades: list[dict[str, Any]] = json.loads(
            get(f"{self.info['exchange_sim']}/_sim/trades")[1]
        )
        return trades

    def quantmesh(self, name: str, *args: str) -> Result:
        """``quantmesh *args`` in the environment compose gives instance ``name`` (its
        secrets, its id), as ``docker-compose exec name quantmesh ...`` would run it."""
        return run_cli(args, self.workdir / name, env=instance_env(name))


def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(url: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def symbol_of(name: str) -> str:
    """``ETHUSDT`` (compose config) -> ``ETH/USDT`` (logs, metrics, the simulator)."""
    return name if "/" in name else f"{name[:-4]}/{name[-4:]}"


def example_env() -> dict[str, str]:
    """The variables of ``.env.example``: what ha.py passes (``clean_env`` drops
    QUANTMESH_*, so the example's values are the ones in force)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def token() -> str:
    return example_env()["QUANTMESH_HTTP_TOKEN"]


def instance_env(name: str) -> dict[str, str]:
    return {**example_env(), "INSTANCE_ID": name}


def status_of(url: str) -> dict[str, Any]:
    code, body = get(url, token())
    assert code == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def wait_ready(run: Run, name: str, url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run.alive()
        code, body = get(url)
        if code == 200 or time.monotonic() > deadline:
            assert code == 200, f"{name} not ready: {body}\n{run.output()}"
            result: dict[str, Any] = json.loads(body)
            return result
        time.sleep(0.2)


def accepted_twice_while_open(orders: list[dict[str, Any]]) -> list[str]:
    """Client order ids the exchange accepted again before their first order closed."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for order in orders:
        by_id.setdefault(order["client_order_id"], []).append(order)
    bad = []
    for cid, same in by_id.items():
        same.sort(key=lambda o: o["created_at"])
        for first, second in itertools.pairwise(same):
            if first["status"] == "open" or second["created_at"] < first["updated_at"]:
                bad.append(cid)
    return bad


@contextmanager
def started(*extra: str, duration: float = 50) -> Iterator[Run]:
    """ha.py running (``extra``: its flags) until the block ends or ``duration`` passes.
    Its directory is removed afterwards unless ``QM_KEEP_HA`` is set."""
    for name in ("initdb", "postgres", "psql"):
        require_binary(name, *(f"{d}/{name}" for d in PG_BIN_DIRS))
    redis_binary()
    cli_binary()
    require_binary("promtool")  # checked before anything starts
    # Not pytest's tmp_path: as root, PostgreSQL runs as user postgres, which cannot enter
    # pytest's private base directory (ha.py says so).
    top = Path(tempfile.mkdtemp(prefix="qm-test-ha-"))
    top.chmod(0o711)
    workdir = top / "ha"
    out = top / "ha.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(HA), "--dir", str(workdir), "--duration", f"{duration:g}", *extra],
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    run = Run(proc, workdir, out, {})
    try:
        info_path = workdir / "ha.json"

        def begun() -> bool:
            run.alive()
            return info_path.exists()

        wait_until(begun, 30, "ha.py to start the fleet", interval=0.1)
        run.info = json.loads(info_path.read_text())
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if os.environ.get("QM_KEEP_HA"):  # for a post-mortem: logs, data, ha.json
            print(f"ha.py's directory kept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
