"""Throwaway Redis servers for tests: standalone, a Sentinel pair, a 3-master Cluster.

Each server runs from the system ``redis-server`` in a temporary directory on a free
port, without persistence (a restart forgets everything, as a crashed cache would), so a
test can kill, pause or restart it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from tests.servers.base import (
    ManagedServer,
    ServerProcess,
    require_binary,
    wait_for_port,
    wait_until,
)
from tests.support import free_port

REDIS_PATHS = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
CLI_PATHS = ("/usr/bin/redis-cli", "/usr/local/bin/redis-cli")


def redis_binary() -> str:
    return require_binary("redis-server", *REDIS_PATHS)


def cli_binary() -> str:
    return require_binary("redis-cli", *CLI_PATHS)


class RedisServer(ManagedServer):
    """One ``redis-server``; ``password``/``user`` add ``requirepass`` and an ACL user."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        password: str | None = None,
        user: tuple[str, str] | None = None,
        extra: tuple[str, ...] = (),
        name: str = "redis",
    ) -> None:
        super().__init__(workdir, port, "qm-redis-")
        self.password = password
        self.cli = cli_binary()
        argv = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--logfile", "",
            *extra,
        ]  # fmt: skip
        if password is not None:
            argv += ["--requirepass", password]
        if user is not None:
            argv += ["--user", user[0], "on", f">{user[1]}", "~*", "&*", "+@all"]
        self.process = ServerProcess(
            argv,
            self.workdir,
            ready=lambda p: wait_for_port("127.0.0.1", self.port, alive=lambda: p.running),
            name=name,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, *args: str) -> str:
        """Run one command with ``redis-cli``; its output."""
        argv = [self.cli, "-p", str(self.port)]
        if self.password is not None:
            argv += ["--no-auth-warning", "-a", self.password]
        done = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()


class _Setup:
    """Several processes started together; whatever started is closed when one fails."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SentinelSetup(_Setup):
    """A master, one replica and one Sentinel (quorum 1) watching them as ``mymaster``.

    Short timeouts, so ``failover()`` (kill the master) promotes the replica in a second
    or two.
    """

    MASTER_NAME = "mymaster"

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="qm-sentinel-"))
        self.master = RedisServer(self.workdir / "master", name="master")
        self.replica = RedisServer(
            self.workdir / "replica",
            extra=("--replicaof", "127.0.0.1", "0"),  # port set in start()
            name="replica",
        )
        self.sentinel_port = free_port()

    def start(self) -> None:
        self.master.start()
        argv = self.replica.process.argv
        argv[argv.index("--replicaof") + 2] = str(self.master.port)
        self.replica.start()
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.MASTER_NAME} 300\n"
            f"sentinel failover-timeout {self.MASTER_NAME} 2000\n"
            f"sentinel parallel-syncs {self.MASTER_NAME} 1\n"
        )
        self.sentinel = ServerProcess(
            [redis_binary(), str(conf), "--sentinel"],
            self.workdir,
            ready=lambda p: wait_for_port("127.0.0.1", self.sentinel_port),
            name="sentinel",
        )
        self.sentinel.start()
        wait_until(self._replica_known, 10, "the sentinel to discover the replica")

    @property
    def sentinel_addr(self) -> str:
        return f"127.0.0.1:{self.sentinel_port}"

    def master_port(self) -> int:
        out = subprocess.run(
            [cli_binary(), "-p", str(self.sentinel_port), "sentinel",
             "get-master-addr-by-name", self.MASTER_NAME],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()  # fmt: skip
        return int(out[1])

    def _replica_known(self) -> bool:
        out = subprocess.run(
            [cli_binary(), "-p", str(self.sentinel_port), "sentinel", "replicas",
             self.MASTER_NAME],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout  # fmt: skip
        return str(self.replica.port) in out

    def failover(self, timeout: float = 15.0) -> None:
        """Kill the master and wait until the Sentinel names the replica master."""
        self.master.kill()
        wait_until(
            lambda: self.master_port() == self.replica.port, timeout, "the sentinel failover"
        )

    def close(self) -> None:
        self.sentinel.kill()
        self.replica.close()
        self.master.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too: nothing
    bound to it (a client socket holding it as its local port counts: Redis could not
    bind it)."""
    for _ in range(1000):
        port = free_port()
        if port + 10000 < 65536 and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_node(workdir: Path, index: int) -> RedisServer:
    return RedisServer(
        workdir / f"node{index}",
        port=_cluster_port(),
        extra=(
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "2000",
            "--cluster-config-file",
            "nodes.conf",
        ),
        name=f"node{index}",
    )


class ClusterSetup(_Setup):
    """Three masters, no replicas, every slot assigned: a Redis Cluster on loopback."""

    def __init__(self, masters: int = 3) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="qm-cluster-"))
        self.nodes = [_cluster_node(self.workdir, i) for i in range(masters)]

    @property
    def addrs(self) -> list[str]:
        return [node.addr for node in self.nodes]

    def start(self) -> None:
        for index in range(len(self.nodes)):
            self._start_node(index)
        subprocess.run(
            [cli_binary(), "--cluster", "create", *self.addrs, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        wait_until(self._ok, 15, "the cluster to report cluster_state:ok")

    def _start_node(self, index: int) -> None:
        """Start a node; one whose ports were taken between choosing and binding them (a
        race with other processes) is tried again on new ones."""
        for attempt in range(3):
            try:
                self.nodes[index].start()
                return
            except (TimeoutError, RuntimeError):
                if attempt == 2:
                    raise
                self.nodes[index].close()
                self.nodes[index] = _cluster_node(self.workdir / f"retry{attempt}", index)

    def _ok(self) -> bool:
        return all("cluster_state:ok" in n.command("cluster", "info") for n in self.nodes)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def wait_gone(server: RedisServer, key: str, timeout: float = 5.0) -> None:
    """Wait until ``key`` no longer exists on ``server``."""
    deadline = time.monotonic() + timeout
    while server.command("exists", key) != "0":
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} still exists after {timeout} s")
        time.sleep(0.01)
