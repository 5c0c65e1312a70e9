"""Throwaway etcd servers for tests: one member, or a three-member cluster.

Each member runs from the system ``etcd`` (Debian's ``etcd-server``) in a temporary
directory on free loopback ports; with ``tls`` (``tests.servers.tls``) its client URL is
``https://`` and it requires a client certificate signed by the same CA. Its data is kept
on disk, so a member killed and started again comes back with everything it had, as a
crashed etcd would. Elections are quick (50 ms heartbeats, 500 ms election timeout), so a
lease may be as short as one second and a lost leader is replaced within a second or so.
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Self

from tests.servers.base import (
    ManagedServer,
    ServerProcess,
    require_binary,
    wait_for_port,
    wait_until,
)
from tests.servers.tls import TlsFiles
from tests.support import free_port

ETCD_PATHS = ("/usr/bin/etcd", "/usr/local/bin/etcd")


def etcd_binary() -> str:
    return require_binary("etcd", *ETCD_PATHS)


def request(
    url: str,
    path: str,
    body: dict[str, Any] | None = None,
    context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """One request to a member's JSON gateway (a GET without ``body``); its reply.
    ``context``: the TLS context of an ``https://`` member (``EtcdServer.context``)."""
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(url + path, data=data, timeout=5, context=context) as reply:
        out: dict[str, Any] = json.loads(reply.read())
        return out


class EtcdServer(ManagedServer):
    """One ``etcd`` member; alone unless ``cluster`` names every member's peer URL. With
    ``tls`` its client URL is ``https://`` (``--client-cert-auth``): ``context`` is then a
    client's TLS context with the client certificate, for ``request``."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        peer_port: int | None = None,
        name: str = "etcd",
        cluster: str | None = None,
        token: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(workdir, port, "qm-etcd-")
        self.name = name
        self.peer_port = peer_port or free_port()
        self.tls = tls
        self.context = None if tls is None else tls.client_context()
        argv = [
            etcd_binary(),
            "--name", name,
            "--data-dir", str(self.workdir / "data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", cluster or f"{name}={self.peer_url}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", token or f"qm-{uuid.uuid4().hex}",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        if tls is not None:
            argv += [
                "--cert-file", str(tls.server_cert),
                "--key-file", str(tls.server_key),
                "--trusted-ca-file", str(tls.ca),
                "--client-cert-auth",
            ]  # fmt: skip
        self.process = ServerProcess(
            argv,
            self.workdir,
            ready=lambda p: wait_for_port("127.0.0.1", self.port, alive=lambda: p.running),
            name=name,
        )
        self._alone = cluster is None

    @property
    def url(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        super().start()
        if self._alone:  # a cluster's members wait for each other: see EtcdCluster
            self.wait_healthy()

    def healthy(self) -> bool:
        """The member serves and has a leader (etcd's own ``/health``)."""
        try:
            return request(self.url, "/health", context=self.context).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = 20.0) -> None:
        wait_until(self.healthy, timeout, f"etcd {self.name} to report healthy")

    def status(self) -> dict[str, Any]:
        """``/v3/maintenance/status``: this member's id (``header.member_id``) and the
        leader's (``leader``)."""
        return request(self.url, "/v3/maintenance/status", {}, self.context)

    def is_leader(self) -> bool:
        status = self.status()
        return bool(status["leader"] == status["header"]["member_id"])


class EtcdCluster:
    """Three members (or ``size``) on loopback, one Raft cluster."""

    def __init__(self, size: int = 3) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="qm-etcd-cluster-"))
        peers = [(f"m{i}", free_port()) for i in range(size)]
        cluster = ",".join(f"{name}=http://127.0.0.1:{port}" for name, port in peers)
        token = f"qm-{uuid.uuid4().hex}"
        self.members = [
            EtcdServer(self.workdir / name, peer_port=port, name=name, cluster=cluster,
                       token=token)
            for name, port in peers
        ]  # fmt: skip

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self) -> None:
        for member in self.members:
            member.start()
        for member in self.members:
            member.wait_healthy()

    def leader(self) -> EtcdServer:
        """The member that leads now (waits for an election to finish)."""
        found: list[EtcdServer] = []

        def elected() -> bool:
            found[:] = [m for m in self.members if m.process.running and _leads(m)]
            return len(found) == 1

        wait_until(elected, 10, "the etcd cluster to elect a leader")
        return found[0]

    def close(self) -> None:
        for member in self.members:
            member.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _leads(member: EtcdServer) -> bool:
    try:
        return member.is_leader()
    except (OSError, ValueError, KeyError, urllib.error.URLError):
        return False
