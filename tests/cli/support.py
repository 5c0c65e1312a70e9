"""Helpers for the end-to-end tests of the ``quantmesh`` command.

Everything here drives the real command in a subprocess (``python -m quantmesh.cli``)
with its working directory in a temporary directory, so every relative path of a config
(``./data/...``) lands there. The daemon's stderr is read line by line on a thread; JSON
lines are structlog events, anything else is a plain line (an error message, a traceback).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

QUANTMESH = [sys.executable, "-m", "quantmesh.cli"]
CONFIG_NAME = "config.yaml"
SYMBOL = "ETH/USDT"

Event = dict[str, Any]
DELETE = object()  # a value for ``changed()``: remove the key


def fast_config() -> dict[str, Any]:
    """A config that trades ETHUSDT quickly on the simulated exchange.

    Every path is relative: the command runs with its cwd in a temporary directory.
    """
    return {
        "exchange": {
            "name": "simulated",
            "simulated": {
                "state_path": "./data/sim-exchange.db",
                "balances": {"USDT": 100000},
                "markets": {
                    "ETHUSDT": {
                        "price": 2000,
                        "feed": {
                            "type": "random_walk",
                            "interval": 0.05,
                            "volatility": 0.002,
                            "seed": 7,
                        },
                    }
                },
            },
        },
        "trading": {
            "shutdown_grace": 3,
            "symbols": [
                {
                    "symbol": "ETHUSDT",
                    "price_interval": 5,
                    "order_quantity": 30,
                    "buy_window_size": 3,
                    "sell_window_size": 3,
                }
            ],
        },
        "database": {
            "type": "sqlite",
            "dsn": "./data/quantmesh.db",
            "journal_path": "./data/journal.jsonl",
        },
        "http": {"enabled": False},
    }


def changed(config: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` with dotted paths set (``"trading.symbols.0.price_interval"``).

    Integer parts index lists; the value ``DELETE`` removes the key.
    """
    out = copy.deepcopy(dict(config))
    for dotted, value in changes.items():
        *parents, last = (int(p) if p.lstrip("-").isdigit() else p for p in dotted.split("."))
        node: Any = out
        for part in parents:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(value)
        else:
            node[last] = value
    return out


def to_yaml(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)


def write_config(directory: Path, config: Mapping[str, Any] | str | bytes) -> Path:
    """Write ``config`` (a mapping, YAML text or raw bytes) as ``directory/config.yaml``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    if isinstance(config, bytes):
        path.write_bytes(config)
    else:
        path.write_text(config if isinstance(config, str) else to_yaml(config), encoding="utf-8")
    return path


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without anything that changes a config's meaning."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "INSTANCE_ID" and not k.startswith(("QM_", "QUANTMESH_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONWARNINGS", None)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Result:
    """A finished command: exit code, output, and how long it took (seconds)."""

    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


def run_cli(
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> Result:
    """Run ``quantmesh *args`` to completion (killed after ``timeout`` seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        [*QUANTMESH, *args],
        cwd=cwd,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def parse_event(line: str) -> Event | None:
    """The structlog event on a JSON log line, or None for a plain line."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "event" in value else None


def plain_lines(text: str) -> list[str]:
    """The lines of ``text`` that are not JSON log events."""
    return [line for line in text.splitlines() if parse_event(line) is None]


class Daemon:
    """``quantmesh run -c config`` in the background, its stderr parsed as it arrives."""

    def __init__(self, config: Path, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*QUANTMESH, "run", "-c", str(config)],
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._cond = threading.Condition()
        self._lines: list[tuple[float, str]] = []  # (seconds since start, line)
        self._stdout: list[str] = []
        self._stderr_closed = False
        self.exited_at: float | None = None  # monotonic time the exit was seen
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self._lines.append((time.monotonic() - self.started, line.rstrip("\n")))
                self._cond.notify_all()
        self.proc.stderr.close()
        with self._cond:
            self._stderr_closed = True
            self._cond.notify_all()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._stdout.append(line)
        self.proc.stdout.close()

    # reading -----------------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(line + "\n" for _, line in self._lines)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    def events(self, name: str | None = None) -> list[Event]:
        """Every event logged so far (with ``_at``, seconds since start), in order."""
        with self._cond:
            lines = list(self._lines)
        out = []
        for at, line in lines:
            event = parse_event(line)
            if event is not None and (name is None or event["event"] == name):
                out.append({**event, "_at": at})
        return out

    def plain_lines(self) -> list[str]:
        return plain_lines(self.stderr)

    def wait_for(
        self,
        name: str,
        timeout: float,
        where: Callable[[Event], bool] = lambda _: True,
        count: int = 1,
    ) -> list[Event]:
        """Wait until ``count`` events named ``name`` matching ``where`` were logged.

        Returns what matched so far when the time is up or the process's stderr closed
        (fewer than ``count``: the caller asserts).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matched = [e for e in self.events(name) if where(e)]
                remaining = deadline - time.monotonic()
                if len(matched) >= count or remaining <= 0 or self._stderr_closed:
                    return matched
                self._cond.wait(min(remaining, 0.5))

    # control -----------------------------------------------------------------------------

    def send(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None when the process is still running after ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.exited_at is None:
            self.exited_at = time.monotonic()
        for reader in self._readers:
            reader.join(5)
        return code

    def stop(self, signum: signal.Signals, timeout: float) -> tuple[int | None, float]:
        """Send ``signum``; return (exit code or None, seconds the exit took)."""
        sent = time.monotonic()
        self.send(signum)
        code = self.wait(timeout)
        return code, (self.exited_at or time.monotonic()) - sent

    def kill(self) -> None:
        """Make sure the process is gone (cleanup); harmless when it already exited."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def read_only(path: Path) -> sqlite3.Connection:
    """Open an SQLite file read-only (never creates it)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def sim_orders(state_path: Path) -> list[dict[str, Any]]:
    """Every order the simulated exchange ever accepted, from its own state file."""
    with read_only(state_path) as conn:
        rows = conn.execute("SELECT record FROM orders ORDER BY id").fetchall()
    conn.close()
    return [json.loads(record) for (record,) in rows]


def listing(directory: Path) -> list[str]:
    """Every path below ``directory``, relative, sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def http_base(daemon: Daemon) -> str:
    """The address of a daemon's HTTP server (started on port 0: read from its log)."""
    events = daemon.wait_for("http_listening", 15)
    assert events, daemon.stderr
    return f"http://127.0.0.1:{events[0]['port']}"


def api_status(base: str, token: str) -> dict[str, Any]:
    """``/api/status`` of a running daemon, asked with its token."""
    request = urllib.request.Request(
        f"{base}/api/status", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body: dict[str, Any] = json.load(response)
    return body


def eventually(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


def assert_no_traceback(text: str) -> None:
    """A refusal is one line of its own, never a Python traceback."""
    assert "Traceback" not in text, text
