"""A throwaway PostgreSQL cluster for tests: initdb in a temporary folder, a free port on loopback, stopped at the end.

``initdb`` refuses to run as root, so when the tests run as root the server runs as ``nobody`` (the data
folder is handed to that user); otherwise it runs as the current user. Install the server with
``scripts/system-deps.sh`` (Debian's ``postgresql``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers import free_port

USER = "workbench"
PASSWORD = "pg-test-secret-7d1f"  # tests check that no error message shows it


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """One PostgreSQL server with a password-protected superuser `USER`, listening on 127.0.0.1 only."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.bin_dir = bin_dir
        self.port = free_port()
        self.host = "127.0.0.1"
        self._as_nobody = os.geteuid() == 0

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_nobody:
            command = ["runuser", "-u", "nobody", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            log = self.data / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")

    def init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_nobody:
            shutil.chown(self.root, "nobody")
            shutil.chown(pwfile, "nobody")
        # Password checks on TCP, as in the compose stack; the socket (in the data folder) stays trusted.
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        pwfile.unlink()

    def start(self) -> None:
        options = f"-p {self.port} -h {self.host} -k {self.data} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.data / "server.log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are cut, as when a database host restarts)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Stop and start the server on the same port; clients' open connections become stale."""
        self.stop()
        self.start()

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """SQLAlchemy URL of `database` (``postgresql+psycopg://...``), password included."""
        return f"postgresql+{driver}://{USER}:{PASSWORD}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=self.host, port=self.port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start a throwaway cluster; it is stopped and deleted on exit."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found (run scripts/system-deps.sh)")
    # Not under pytest's tmp folder: that one is private to the user running the tests, and the server may
    # run as another.
    root = Path(tempfile.mkdtemp(prefix="wb-pg-"))
    cluster = PostgresCluster(root, bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            if (cluster.data / "postmaster.pid").exists():
                cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster shared by the session; tests take their own database with `create_database`."""
    if _bin_dir() is None:
        pytest.skip("PostgreSQL is not installed; run scripts/system-deps.sh")
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture()
def postgres_url(postgres: PostgresCluster) -> str:
    """SQLAlchemy URL of a fresh, empty database for one test."""
    return postgres.create_database()
