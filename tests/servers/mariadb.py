"""A throwaway MariaDB server for tests: a data directory in a temporary directory, free port.

``mariadb-install-db`` creates the system tables once; ``mariadbd`` then runs as root
(``--user=root``) with ``--skip-grant-tables``, so clients connect as ``root`` without a
password. Durability is relaxed (no flush per commit, no doublewrite, no binlog): the
tests measure behaviour, not disks. One server serves a whole test session;
``create_database`` gives each test its own empty database.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pymysql

from tests.servers.base import ManagedServer, ServerProcess, require_binary, wait_until

MARIADB_USER = "root"


class MariaDBServer(ManagedServer):
    """``mariadb-install-db`` once, then ``start``/``stop``/``kill``/``restart``, same port."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self._install = require_binary(
            "mariadb-install-db", "/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db"
        )
        self._mariadbd = require_binary("mariadbd", "/usr/sbin/mariadbd", "/usr/sbin/mysqld")
        super().__init__(workdir, port, "qm-maria-")
        self.datadir = self.workdir / "data"
        self.socket = self.workdir / "mariadb.sock"
        self._init()
        self.process = ServerProcess(
            [
                self._mariadbd,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.workdir / 'mariadb.pid'}",
                "--user=root",
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=32M",
                "--max-connections=300",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_bin",
            ],
            self.workdir,
            ready=self._wait_ready,
            name="mariadb",
        )

    def _init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                self._install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stdout}\n{done.stderr}")

    def _wait_ready(self, _process: ServerProcess) -> None:
        def ready() -> bool:
            if not self.process.running:
                raise RuntimeError(f"mariadbd exited:\n{self.process.tail()}")
            try:
                self.execute("SELECT 1")
            except pymysql.MySQLError:
                return False
            return True

        wait_until(ready, 60, f"mariadb on port {self.port}", interval=0.1)

    # databases ----------------------------------------------------------------------------

    def url(self, database: str = "mysql", *, port: int | None = None) -> str:
        """A SQLAlchemy URL (async driver) for ``database``, optionally via another port."""
        return f"mysql+aiomysql://{MARIADB_USER}@127.0.0.1:{port or self.port}/{database}"

    def create_database(self, name: str) -> str:
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def query(self, sql: str, database: str | None = None) -> list[tuple[object, ...]]:
        return self.execute(sql, database)

    def execute(self, sql: str, database: str | None = None) -> list[tuple[object, ...]]:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=MARIADB_USER,
            database=database,
            connect_timeout=2,
            autocommit=True,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()
