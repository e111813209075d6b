"""A real, throwaway PostgreSQL server for tests: Debian's server binaries (``initdb``, ``pg_ctl``),
on 127.0.0.1 and a free port, ``fsync=off``, password authentication (scram-sha-256).

initdb refuses to run as root and CI runs as root, so as root the cluster belongs to the
``postgres`` system user and every server command runs through ``runuser -u postgres``.
``make pg-tools`` (part of ``make test``) installs Debian's ``postgresql`` when it is missing.

Fixtures:
- ``postgres``: one server per test session (per xdist worker); ``.stop()``/``.start()``/
  ``.kill()`` let a test take the database away and bring it back.
- ``pg_url``: a fresh, empty database on that server for one test (``postgresql://`` URL with the
  password in it); ``pg_password_file`` is the same password in a file.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USER = "rerund"


def server_bindir() -> Path | None:
    """The directory of ``pg_ctl`` and ``initdb``: Debian keeps them under /usr/lib/postgresql/N/bin."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "pg_ctl").exists() and Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, owned by ``postgres`` when we are root."""

    bindir: Path
    root: Path
    port: int = field(default_factory=_free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self.root.chmod(0o700)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        result = self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.root / "log"), "-o", options, "-w", "start",
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            log = (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash, not a shutdown); ``start()`` recovers it."""
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def url(self, database: str = "postgres", *, with_password: bool = True) -> str:
        auth = f"{USER}:{self.password}" if with_password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PostgresServer:
    bindir = server_bindir()
    if bindir is None:
        raise RuntimeError(
            "no PostgreSQL server binaries: run `make pg-tools` (installs Debian's postgresql)"
        )
    server = PostgresServer(bindir=bindir, root=Path(tempfile.mkdtemp(prefix="rerund-pg-")))
    server.init()
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh database for this test; the server is started again if a test stopped it."""
    if not (postgres.datadir / "postmaster.pid").exists():
        postgres.start()
    return postgres.create_database("t_" + secrets.token_hex(6))


@pytest.fixture
def pg_password_file(postgres: PostgresServer, tmp_path: Path) -> Path:
    path = tmp_path / "state-password"
    path.write_text(postgres.password + "\n")
    path.chmod(0o600)
    return path
