"""Starting, stopping, killing and pausing server processes for tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Self

import pytest

from tests.support import free_port


def require_binary(name: str, *candidates: str) -> str:
    """The path of ``name`` (searched on PATH, then at ``candidates``).

    A missing binary skips the test with the reason, except under ``CI=true``, where a
    missing server is a broken build: the test fails instead of hiding behind a skip.
    """
    found = shutil.which(name)
    if found is None:
        found = next((c for c in candidates if os.access(c, os.X_OK)), None)
    if found is not None:
        return found
    reason = f"{name} is not installed (looked on PATH and at {list(candidates)})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (.ci/run)", pytrace=False)
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_for_port(
    host: str, port: int, timeout: float = 20.0, alive: Callable[[], bool] = lambda: True
) -> None:
    """Until ``host:port`` accepts connections; fails at once when ``alive`` says the
    server exited (a port it could not bind), not after the whole timeout."""
    wait_until(
        lambda: port_open(host, port) or not alive(),
        timeout,
        f"{host}:{port} to accept connections",
    )
    if not alive():
        raise RuntimeError(f"the server meant to listen on {host}:{port} exited at start")


class ServerProcess:
    """One server process: its command, its directory and its log file.

    ``ready`` is called after each start and must return once the server serves (it
    usually waits for the port). The process runs in its own process group, so a kill
    reaches the children it forks.
    """

    def __init__(
        self,
        argv: Sequence[str],
        workdir: Path,
        *,
        ready: Callable[[ServerProcess], None],
        env: dict[str, str] | None = None,
        user: str | None = None,
        name: str = "server",
    ) -> None:
        self.argv = list(argv)
        self.workdir = workdir
        self.ready = ready
        self.env = env
        self.user = user
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, f"{self.name} is not started"
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            env=None if self.env is None else {**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=self.user,
        )
        try:
            self.ready(self)
        except BaseException:
            self.kill()
            raise
        if not self.running:
            raise RuntimeError(f"{self.name} exited at start; see {self.log_path}:\n{self.tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait(10)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean shutdown, like a crash."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            self._proc.wait(10)
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def _reap(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class ManagedServer:
    """A test server: one process, its directory (removed on close when made here).

    Subclasses set ``self.process`` in their ``__init__`` after calling this one's.
    """

    process: ServerProcess

    def __init__(self, workdir: Path | None, port: int | None, prefix: str) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=prefix))
        self.port = port or free_port()

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL the server and its children (one process group), like a crash."""
        self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.process.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
