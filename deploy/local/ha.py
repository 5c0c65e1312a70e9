"""The HA layout of docker-compose.ha.yml as local processes, for people without Docker.

    .venv/bin/python deploy/local/ha.py [--dir DIR] [--base-port N] [--duration SECONDS]
                                        [--keep-going]

Starts, in DIR (default: a new temporary directory, printed), the same topology as the
compose file: a password-protected Redis with append-only persistence, a PostgreSQL with
the ``quantmesh`` user and database, ``quantmesh sim-exchange`` with
``deploy/compose/exchange-sim.yaml``, and three ``quantmesh run`` instances. The instances'
configs are generated from the very files compose mounts (``deploy/compose/quantmesh-*.yaml``)
with only the compose hostnames, the HTTP port and the data paths rewritten, so the two
layouts cannot drift apart: a compose file that changes shape makes this script fail, not
silently run something else. Environment variables are the ones compose sets; their values
come from the environment, else from ``deploy/compose/.env.example``.

Runs until Ctrl-C or SIGTERM (or ``--duration``), then stops the instances (SIGTERM, all at
once), the simulator, PostgreSQL and Redis, in that order, and exits 0. A process that dies
on the way is reported with the end of its log, and the exit code is 1. With
``--keep-going``, an instance that dies once the fleet runs is reported the same way but
the rest run on, as in compose, so a failover can be watched (``kill -9`` a master's process
group: the standby takes its symbols over); the exit code is still 1. Logs and data stay
in DIR; ``DIR/ha.json`` describes the running fleet (ports, process ids, URLs) for scripts.

The servers are started by the test suite's own server helpers (``tests/servers``), so the
repository root is put on ``sys.path``: run it from a checkout with the dev extras installed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

COMPOSE_DIR = ROOT / "deploy" / "compose"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
SIM_CONFIG = COMPOSE_DIR / "exchange-sim.yaml"
INSTANCES = ("quantmesh-1", "quantmesh-2", "quantmesh-3")
# What compose passes to every instance (docker-compose.ha.yml, x-quantmesh environment).
SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "QUANTMESH_HTTP_TOKEN",
    "EXCHANGE_API_KEY",
    "EXCHANGE_SECRET",
)
COMPOSE_DATA = "/var/lib/quantmesh"  # the instances' data volume in the compose file
DB_NAME = DB_USER = "quantmesh"
# A missing binary -> the Debian package that has it.
PACKAGES = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "initdb": "postgresql",
    "postgres": "postgresql",
    "psql": "postgresql-client",
}
START_TIMEOUT = 90.0  # seconds for an instance to serve HTTP (ccxt imports slowly)


class HaError(Exception):
    """A one-line reason the fleet cannot run (printed without a traceback)."""


@dataclass(frozen=True)
class Ports:
    redis: int
    postgres: int
    sim: int
    http: dict[str, int]

    @classmethod
    def choose(cls, base: int | None) -> Ports:
        """Consecutive ports from ``base`` (each checked free), or any free ones."""
        from tests.servers.base import port_open
        from tests.support import free_port

        count = 3 + len(INSTANCES)
        if base is None:
            ports = [free_port() for _ in range(count)]
        else:
            ports = list(range(base, base + count))
            if ports[-1] > 65535:
                raise HaError(f"--base-port {base}: needs {count} ports up to {ports[-1]}")
            taken = [p for p in ports if port_open("127.0.0.1", p)]
            if taken:
                raise HaError(f"port {taken[0]} is in use: choose another --base-port")
        return cls(ports[0], ports[1], ports[2], dict(zip(INSTANCES, ports[3:], strict=True)))


# environment ------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def secrets_env(environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The compose variables (environment first, then .env.example) and those defaulted."""
    example = read_env_file(ENV_EXAMPLE)
    values, defaulted = {}, []
    for key in SECRETS:
        if environ.get(key):
            values[key] = environ[key]
        elif key in example:
            values[key] = example[key]
            defaulted.append(key)
        else:
            raise HaError(f"{key} is not set and not in {ENV_EXAMPLE.relative_to(ROOT)}")
    return values, defaulted


# configs ----------------------------------------------------------------------------------


def _rewrite(node: Any, replace: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite(v, replace) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, replace) for v in node]
    return replace(node) if isinstance(node, str) else node


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def local_config(source: Path, ports: Ports, http_port: int, data: Path) -> dict[str, Any]:
    """The compose config ``source`` for local processes: compose hostnames -> 127.0.0.1
    ports, HTTP on loopback at ``http_port``, data paths -> ``data``.

    Secrets stay ``${VAR}`` references, read by the daemon from its environment as in
    compose. A compose config that no longer names a service this script replaces, or names
    a compose host or the data volume where it is not replaced, is an error: the layouts must
    not drift apart.
    """
    name = source.relative_to(ROOT)
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    hosts = {
        "redis:6379": f"127.0.0.1:{ports.redis}",
        "@postgres:5432/": f"@127.0.0.1:{ports.postgres}/",
        "//exchange-sim:8765/": f"//127.0.0.1:{ports.sim}/",
    }
    found: set[str] = set()

    def replace(text: str) -> str:
        for old, new in hosts.items():
            if old in text:
                found.add(old)
                text = text.replace(old, new)
        return text.replace(f"{COMPOSE_DATA}/", f"{data}/")

    config = _rewrite(config, replace)
    missing = sorted(set(hosts) - found)
    if missing:
        raise HaError(f"{name} no longer mentions {missing[0]}: update deploy/local/ha.py")
    compose_only = re.compile(r"\b(redis|postgres|exchange-sim):\d|" + re.escape(COMPOSE_DATA))
    left = [s for s in _strings(config) if compose_only.search(s)]
    if left:
        raise HaError(f"{name}: {left[0]!r} names a compose host or path ha.py does not replace")
    config["http"] = {**(config.get("http") or {}), "host": "127.0.0.1", "port": http_port}
    return dict(config)


def write_config(config: dict[str, Any], source: Path, path: Path) -> None:
    header = (
        f"# Generated by deploy/local/ha.py from {source.relative_to(ROOT)} (the file\n"
        "# docker-compose.ha.yml mounts): compose hostnames -> local ports, data paths ->\n"
        "# this directory. Edit the source, not this copy.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


# processes --------------------------------------------------------------------------------


def _server_process() -> type:
    from tests.servers.base import ServerProcess

    class Process(ServerProcess):
        """A server process that remembers its exit code after it was reaped."""

        returncode: int | None = None

        @property
        def exit_code(self) -> int | None:
            proc = self._proc
            return proc.poll() if proc is not None else self.returncode

        def _reap(self) -> None:
            if self._proc is not None:
                self.returncode = self._proc.poll()
            super()._reap()

    return Process


@dataclass
class Member:
    """One process of the fleet: how to stop it, how to tell it is alive."""

    name: str
    process: Any  # tests.servers.base.ServerProcess
    stop: Callable[[], None]

    def halt(self) -> None:
        self.stop()


class Fleet:
    """The processes of the HA layout, started and stopped in the compose order."""

    def __init__(self, workdir: Path, ports: Ports, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.ports = ports
        self.env = env
        self.members: list[Member] = []
        self.instances: list[Member] = []
        self.serving = False  # every instance answered HTTP: past its signal-less start
        self.sources = {name: COMPOSE_DIR / f"{name}.yaml" for name in INSTANCES}

    # start ---------------------------------------------------------------------------------

    def start(self, stopping: threading.Event) -> None:
        """Start everything, stopping early (without error) when ``stopping`` is set."""
        steps = [self._start_redis, self._start_postgres, self._start_sim, self._start_instances]
        for step in steps:
            if stopping.is_set():
                return
            step(stopping)

    def _start_redis(self, _stopping: threading.Event) -> None:
        from tests.servers.redis import RedisServer

        redis = RedisServer(
            self.workdir / "redis",
            port=self.ports.redis,
            password=self.env["REDIS_PASSWORD"],
            extra=("--appendonly", "yes"),  # fencing counters survive a restart, as in compose
        )
        self._run(Member("redis", redis.process, redis.stop))

    def _start_postgres(self, _stopping: threading.Event) -> None:
        from tests.servers.postgres import PostgresServer

        password = self.env["POSTGRES_PASSWORD"]
        workdir = self.workdir / "postgres"
        try:
            postgres = PostgresServer(workdir, self.ports.postgres, password=password)
        except RuntimeError as exc:  # initdb's reason is on its last line
            reason = str(exc).strip().splitlines()[-1]
            raise HaError(f"postgres: {reason}") from None
        self._run(Member("postgres", postgres.process, postgres.stop))
        try:
            postgres.create_role(DB_USER, password)
            postgres.create_database(DB_NAME, owner=DB_USER)
        except RuntimeError as exc:
            raise HaError(f"postgres: {_first_line(exc)}") from None

    def _start_sim(self, _stopping: threading.Event) -> None:
        from tests.servers.base import wait_for_port

        workdir = self.workdir / "exchange-sim"
        port = self.ports.sim
        sim = _server_process()(
            [
                sys.executable, "-m", "quantmesh.cli", "sim-exchange",
                "--host", "127.0.0.1", "--port", str(port),
                "--config", str(SIM_CONFIG), "--state", str(workdir / "sim-exchange.db"),
            ],
            workdir,
            ready=lambda _p: wait_for_port("127.0.0.1", port, 30),
            env={
                "QM_SIM_API_KEY": self.env["EXCHANGE_API_KEY"],
                "QM_SIM_API_SECRET": self.env["EXCHANGE_SECRET"],
            },
            name="exchange-sim",
        )  # fmt: skip
        self._run(Member("exchange-sim", sim, sim.stop))

    def _start_instances(self, stopping: threading.Event) -> None:
        """Start the three together (each imports for seconds), then wait for their HTTP."""
        process_class = _server_process()
        for name in INSTANCES:
            workdir = self.workdir / name
            config = local_config(self.sources[name], self.ports, self.ports.http[name], workdir)
            write_config(config, self.sources[name], workdir / "config.yaml")
            process = process_class(
                [sys.executable, "-m", "quantmesh.cli", "run", "-c", str(workdir / "config.yaml")],
                workdir,
                ready=lambda _p: None,
                env={"INSTANCE_ID": name, **self.env},
                name=name,
            )
            member = Member(name, process, functools.partial(process.stop, 30))
            self._run(member)
            self.instances.append(member)
        self._wait_http(stopping)

    def _wait_http(self, stopping: threading.Event) -> None:
        from tests.servers.base import port_open

        waiting = {m.name: self.ports.http[m.name] for m in self.instances}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting and not stopping.is_set():
            self.raise_if_dead()
            waiting = {n: p for n, p in waiting.items() if not port_open("127.0.0.1", p)}
            if time.monotonic() > deadline:
                names = ", ".join(sorted(waiting))
                raise HaError(f"{names}: no HTTP endpoint after {START_TIMEOUT:g} s")
            time.sleep(0.1)
        self.serving = not waiting

    def _run(self, member: Member) -> None:
        self.members.append(member)
        try:
            member.process.start()
        except (RuntimeError, TimeoutError) as exc:
            raise HaError(f"{member.name} did not start: {_first_line(exc)}") from None

    # watch and stop ------------------------------------------------------------------------

    def raise_if_dead(self) -> None:
        for member in self.members:
            if not member.process.running:
                code = getattr(member.process, "exit_code", None)
                how = f" with code {code}" if code is not None else ""
                raise HaError(f"{member.name} exited{how}; see {member.process.log_path}")

    def dead(self) -> Member | None:
        return next((m for m in self.members if not m.process.running), None)

    def stop(self) -> list[str]:
        """Instances first (together), then simulator, PostgreSQL, Redis; the problems."""
        problems = []
        running = [m for m in self.instances if m.process.running]  # the dead are reported
        with ThreadPoolExecutor(max(len(self.instances), 1)) as pool:
            list(pool.map(Member.halt, self.instances))
        for member in running:
            code = member.process.exit_code
            # Before it serves, an instance may still be importing, without its handlers
            # yet: SIGTERM ends it at once, as asked.
            if code != 0 and self.serving:
                problems.append(f"{member.name} exited with code {code} on SIGTERM")
        for member in reversed([m for m in self.members if m not in self.instances]):
            member.stop()
        return problems

    def describe(self) -> dict[str, Any]:
        """What ``DIR/ha.json`` holds: every process's id (its process group), port, log."""
        out: dict[str, Any] = {"dir": str(self.workdir), "processes": {}, "instances": {}}
        ports = {"redis": self.ports.redis, "postgres": self.ports.postgres}
        ports |= {"exchange-sim": self.ports.sim} | self.ports.http
        for member in self.members:
            out["processes"][member.name] = {
                "pid": member.process.pid,
                "port": ports[member.name],
                "log": str(member.process.log_path),
            }
        for name in INSTANCES:
            config = yaml.safe_load(self.sources[name].read_text(encoding="utf-8"))
            base = f"http://127.0.0.1:{self.ports.http[name]}"
            out["instances"][name] = {
                "role": config["instance"]["role"],
                "symbols": [s["symbol"] for s in config["trading"]["symbols"]],
                "metrics": f"{base}/metrics",
                "readyz": f"{base}/readyz",
                "status": f"{base}/api/status",
                "config": str(self.workdir / name / "config.yaml"),
            }
        out["exchange_sim"] = f"http://127.0.0.1:{self.ports.sim}"
        out["redis"] = f"127.0.0.1:{self.ports.redis}"
        out["postgres"] = f"127.0.0.1:{self.ports.postgres}/{DB_NAME} (user {DB_USER})"
        return out


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().partition("\n")[0]


# the command ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deploy/local/ha.py",
        description="Run docker-compose.ha.yml's layout as local processes (no Docker).",
    )
    parser.add_argument("--dir", type=Path, help="working directory (default: a new temp dir)")
    parser.add_argument(
        "--base-port",
        type=int,
        help="redis N, postgres N+1, exchange-sim N+2, instances N+3..N+5 (default: free ports)",
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="an instance that dies is reported, the others run on (exit code still 1)",
    )
    return parser.parse_args(argv)


def prepare_dir(given: Path | None) -> Path:
    if given is None:
        workdir = Path(tempfile.mkdtemp(prefix="quantmesh-ha-"))
    else:
        workdir = given.resolve()
        if workdir.exists() and any(workdir.iterdir()):
            raise HaError(f"{workdir} is not empty: pass a new or empty --dir")
        workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # PostgreSQL runs as its own user when started by root
    if os.geteuid() == 0:
        closed = next((p for p in workdir.parents if not p.stat().st_mode & 0o001), None)
        if closed is not None:
            raise HaError(
                f"{closed} is closed to other users, so PostgreSQL (run as user postgres) "
                f"cannot reach {workdir}: pass a --dir outside it, e.g. under /tmp"
            )
    return workdir


def print_fleet(info: dict[str, Any], defaulted: list[str]) -> None:
    print(f"redis         {info['redis']} (password: REDIS_PASSWORD)")
    print(f"postgres      {info['postgres']}")
    print(
        f"exchange-sim  {info['exchange_sim']}  (every order: {info['exchange_sim']}/_sim/orders)"
    )
    for name, instance in info["instances"].items():
        print(f"{name}   {instance['role']}: {', '.join(instance['symbols'])}")
        print(f"  metrics     {instance['metrics']}")
        print(f"  readyz      {instance['readyz']}")
        print(f"  api/status  {instance['status']}  (Authorization: Bearer $QUANTMESH_HTTP_TOKEN)")
    if defaulted:
        print(f"example values from deploy/compose/.env.example: {', '.join(defaulted)}")
    print(f"logs, data and ha.json in {info['dir']}; Ctrl-C stops everything", flush=True)


def _missing_binary(message: str) -> str:
    """One line for a server binary (or its system user) the test helpers did not find."""
    name = message.split()[0] if message else ""
    package = PACKAGES.get(name)
    if package is None and "postgres" in message:
        package = "postgresql"
    if package is None:
        return message
    return f"{message.partition(' (')[0]}: install it (Debian: apt-get install {package})"


@contextmanager
def signals_set(stopping: threading.Event) -> Iterator[None]:
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda *_: stopping.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(args: argparse.Namespace, stopping: threading.Event) -> int:
    env, defaulted = secrets_env(dict(os.environ))
    ports = Ports.choose(args.base_port)
    workdir = prepare_dir(args.dir)
    print(f"quantmesh HA layout in {workdir}", flush=True)
    fleet = Fleet(workdir, ports, env)
    try:
        fleet.start(stopping)
    except BaseException as exc:
        if isinstance(exc, HaError):
            print(f"ha: error: {exc}", file=sys.stderr)
            dead = fleet.dead()
            if dead is not None:
                print(f"the end of {dead.process.log_path}:", file=sys.stderr)
                print(dead.process.tail(20), file=sys.stderr, flush=True)
        fleet.stop()
        if isinstance(exc, HaError):
            return 1
        raise
    if not stopping.is_set():
        info = fleet.describe()
        (workdir / "ha.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        print_fleet(info, defaulted)
    return watch(fleet, stopping, args.duration, keep_going=args.keep_going)


def watch(
    fleet: Fleet, stopping: threading.Event, duration: float | None, *, keep_going: bool = False
) -> int:
    """Until a signal, ``duration`` or a death (with ``keep_going``: of a server, not of an
    instance); then stop everything. The exit code."""
    deadline = None if duration is None else time.monotonic() + duration
    reported: set[str] = set()
    fatal = None
    while not stopping.is_set() and fatal is None:
        if deadline is not None and time.monotonic() >= deadline:
            break
        stopping.wait(0.2)
        for dead in (m for m in fleet.members if not m.process.running):
            if dead.name not in reported:
                reported.add(dead.name)
                _report_death(dead)
            if not keep_going or dead not in fleet.instances:
                fatal = dead
    print("stopping: instances, exchange-sim, postgres, redis", flush=True)
    problems = fleet.stop()
    for problem in problems:
        print(f"ha: error: {problem}", file=sys.stderr)
    print("stopped", flush=True)
    return 1 if reported or problems else 0


def _report_death(dead: Member) -> None:
    code = getattr(dead.process, "exit_code", None)
    how = f" with code {code}" if code is not None else ""
    print(f"ha: error: {dead.name} exited{how}; the end of its log:", file=sys.stderr)
    print(dead.process.tail(20), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stopping = threading.Event()
    try:
        import pytest
    except ImportError:
        print("ha: error: pytest is missing: pip install -e '.[dev]'", file=sys.stderr)
        return 1
    with signals_set(stopping):
        try:
            return run(args, stopping)
        except HaError as exc:
            print(f"ha: error: {exc}", file=sys.stderr)
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            print(f"ha: error: {_missing_binary(str(exc.msg))}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
