"""A throwaway PostgreSQL server for tests: initdb in a temporary directory, free port.

PostgreSQL refuses to run as root, so ``initdb`` and ``postgres`` run as the ``postgres``
system user in a directory that user owns. Durability is switched off (``fsync``,
``synchronous_commit``, ``full_page_writes``): the tests measure behaviour, not disks.
Authentication is ``trust`` on loopback; clients connect as ``postgres`` without a
password. One server serves a whole test session; ``create_database`` gives each test its
own empty database.

With ``password``, authentication is ``scram-sha-256`` instead (``postgres`` has that
password; ``create_role`` adds login roles), as a production server would ask: used by
``deploy/local/ha.py``, which also runs it as a non-root user (then ``postgres`` runs as
that user, there being no other it could switch to).

Replication: every server runs with ``wal_level=replica`` and ``initdb``'s ``pg_hba.conf``,
which lets loopback ``replication`` connections in (by the same method as the others:
``trust``, or ``scram-sha-256`` with ``password``). ``PostgresServer(primary=other)`` makes a streaming replica of the
running ``other`` with ``pg_basebackup -R`` (``standby.signal`` and ``primary_conninfo``)
instead of ``initdb``, streaming from ``upstream_port`` when given (a proxy in front of
``other``, which a test can cut); ``promote`` makes it a primary. ``settings`` adds server settings
(``synchronous_commit=on``, say). ``wait_for_replica(synchronous=True)`` makes a primary
wait for its replica at each commit (set after the replica is made: a primary with
``synchronous_standby_names`` and no replica takes no writes).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from tests.servers.base import ManagedServer, ServerProcess, require_binary, wait_until

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/bin")
PG_USER = "postgres"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is not None and "postgresql" in found:
        return found
    return require_binary(name, *(f"{d}/{name}" for d in PG_BIN_DIRS))


class PostgresServer(ManagedServer):
    """``initdb`` (or ``pg_basebackup`` of ``primary``) once, then ``start``/``stop``/
    ``kill``/``restart`` on the same port."""

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        *,
        password: str | None = None,
        primary: PostgresServer | None = None,
        upstream_port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self._initdb = _binary("initdb")
        self._postgres = _binary("postgres")
        self._psql = _binary("psql")
        # As root, switch to the ``postgres`` user (PostgreSQL refuses root); else run as is.
        self._user = _system_user() if os.geteuid() == 0 else None
        self.password: str | None = password if primary is None else primary.password
        super().__init__(workdir, port, "qm-pg-")
        self.datadir = self.workdir / "data"
        if primary is None:
            self._init()
        else:
            self._base_backup(upstream_port or primary.port)
        extra = [arg for key, value in (settings or {}).items() for arg in ("-c", f"{key}={value}")]
        self.process = ServerProcess(
            [
                self._postgres,
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.workdir}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
                "-c",
                "wal_level=replica",
                *extra,
            ],
            self.workdir,
            ready=self._wait_ready,
            user=PG_USER if self._user is not None else None,
            name="postgres",
        )

    def _init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.workdir, self._user.pw_uid, self._user.pw_gid)
        self.workdir.chmod(0o755)
        auth = ["-A", "trust"]
        pwfile = self.workdir / "initdb.pw"
        if self.password is not None:
            pwfile.touch(0o600)
            if self._user is not None:
                os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
            pwfile.write_text(self.password + "\n")
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        try:
            done = subprocess.run(
                [self._initdb, "-D", str(self.datadir), "-U", PG_USER, *auth, "--no-sync"],
                cwd=self.workdir,
                user=PG_USER if self._user is not None else None,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}\n{done.stderr}")

    def _base_backup(self, port: int) -> None:
        """This server's data directory: a copy of the running primary at ``port``, set up
        (``-R``) to stream from that port as a hot standby."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.workdir, self._user.pw_uid, self._user.pw_gid)
        self.workdir.chmod(0o755)
        env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        done = subprocess.run(
            [
                _binary("pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(port), "-U", PG_USER),
                *("-D", str(self.datadir), "-R", "-X", "stream", "--no-sync", "-c", "fast"),
            ],
            cwd=self.workdir,
            user=PG_USER if self._user is not None else None,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {done.stdout}\n{done.stderr}")

    def _wait_ready(self, _process: ServerProcess) -> None:
        def ready() -> bool:
            if not self.process.running:
                raise RuntimeError(f"postgres exited:\n{self.process.tail()}")
            return self._psql_run("SELECT 1", check=False).returncode == 0

        wait_until(ready, 30, f"postgres on port {self.port}", interval=0.1)

    # control ------------------------------------------------------------------------------

    def stop(self) -> None:
        """A fast shutdown (SIGINT): SIGTERM would wait for every client to disconnect."""
        if self.process.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not self.process.running, 15, "postgres to stop")
        self.process.stop()

    def wait_for_replica(self, *, synchronous: bool) -> None:
        """Until a replica streams from this primary; with ``synchronous``, first make each
        commit wait until the replica has it (``synchronous_standby_names = '*'``)."""
        names = "*" if synchronous else ""
        self.query(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        self.query("SELECT pg_reload_conf()")
        state = "sync" if synchronous else "async"

        def streaming() -> bool:
            rows = self.query("SELECT state, sync_state FROM pg_stat_replication")
            return ["streaming", state] in rows

        wait_until(streaming, 30, f"an {state} replica of port {self.port}", interval=0.1)

    def promote(self) -> None:
        """Make this replica a primary; returns once it takes writes."""
        promoted = self.query("SELECT pg_promote(true, 30)")
        if promoted != [["t"]]:
            raise RuntimeError(f"pg_promote did not finish: {promoted}")

    def in_recovery(self) -> bool:
        """Whether this server is a standby (replaying its primary's WAL)."""
        return self.query("SELECT pg_is_in_recovery()") == [["t"]]

    def replayed_lsn(self) -> str:
        """The primary's WAL position up to which this standby has replayed."""
        return self.query("SELECT pg_last_wal_replay_lsn()")[0][0]

    # databases ----------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, port: int | None = None) -> str:
        """A SQLAlchemy URL (async driver) for ``database``, optionally via another port."""
        auth = PG_USER if self.password is None else f"{PG_USER}:{quote(self.password, safe='')}"
        return f"postgresql+asyncpg://{auth}@127.0.0.1:{port or self.port}/{database}"

    def create_database(self, name: str, owner: str | None = None) -> str:
        self._psql_run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        owned = "" if owner is None else f' OWNER "{owner}"'
        self._psql_run(f'CREATE DATABASE "{name}" TEMPLATE template0{owned}')
        return name

    def create_role(self, name: str, password: str) -> None:
        """A login role with ``password`` (sent on stdin: never on a command line or in an
        error message)."""
        literal = password.replace("'", "''")
        self._psql_run(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{literal}'", secret=True)

    def drop_database(self, name: str) -> None:
        self._psql_run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)

    def query(self, sql: str, database: str = "postgres") -> list[list[str]]:
        """Rows of ``sql`` as text (psql's unaligned output)."""
        out = self._psql_run(sql, database=database).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def _psql_run(
        self, sql: str, *, database: str = "postgres", check: bool = True, secret: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PGCONNECT_TIMEOUT": "2"}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        done = subprocess.run(
            [
                self._psql,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                *(() if secret else ("-c", sql)),
            ],
            input=sql if secret else None,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            env=env,
        )
        if check and done.returncode != 0:
            shown, detail = sql, done.stderr.strip()
            if secret:  # the error's first line names it; the next ones quote the statement
                shown, detail = f"{sql.split()[0]} ...", detail.partition("\n")[0]
            raise RuntimeError(f"psql failed ({shown}): {detail}")
        return done


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        import pytest

        if os.environ.get("CI"):
            pytest.fail("no 'postgres' system user; CI must install postgresql", pytrace=False)
        pytest.skip("no 'postgres' system user to run PostgreSQL as")
