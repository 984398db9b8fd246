"""Real servers the fleet's tests run against: a PostgreSQL server for the session.

A pytest plugin: test modules load it with ``pytest_plugins = ("fleet_servers",)``.

``postgres_server`` starts PostgreSQL (``initdb`` + ``pg_ctl``, from PATH or Debian's
``/usr/lib/postgresql/*/bin``) on a free loopback port in a scratch folder, once per session,
and stops it at the end. PostgreSQL refuses to run as root, so as root the server runs as the
unprivileged ``nobody`` (``runuser``), in a folder that user owns. ``new_postgres_database``
hands each test a fresh, empty database. Tests skip, saying why, only where no server can start
(no binaries, no way to drop root, or the server failing to come up).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.servers import free_port

#: The unprivileged account the server runs as when the tests run as root.
SERVER_USER = "nobody"


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL server; ``superuser`` logs in without a password from loopback."""

    host: str
    port: int
    superuser: str
    data_dir: Path
    log_file: Path

    def url(self, database: str, driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://{self.superuser}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """For asyncpg itself (no SQLAlchemy driver name)."""
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{database}"

    async def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its name."""
        import asyncpg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(self.dsn())
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return name


def postgres_bin_dir() -> Path | None:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are: PATH first, then Debian's versioned
    folder (its ``postgresql`` package does not put them on PATH)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _as_server_user() -> list[str] | None:
    """The prefix that runs a command as the server's user: none when not root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser") or shutil.which("su")
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        return None
    if runuser is None:
        return None
    if Path(runuser).name == "runuser":
        return [runuser, "-u", SERVER_USER, "--"]
    return None


@contextlib.contextmanager
def run_postgres() -> Iterator[PostgresServer]:
    """Start a throw-away server (skipping the test, with the reason, when none can start)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in "
                    "/usr/lib/postgresql/*/bin); `make test` installs Debian's postgresql")
    prefix = _as_server_user()
    if prefix is None:
        pytest.skip(f"running as root, and cannot run PostgreSQL as {SERVER_USER!r} (no such "
                    "user, or no runuser)")
    # Not pytest's tmp_path: its folders are private to root, and the server's user must reach
    # its data folder.
    root = Path(tempfile.mkdtemp(prefix="genre-pg-"))
    data, log_file = root / "data", root / "server.log"
    if prefix:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(root, account.pw_uid, account.pw_gid)
    superuser = "postgres"

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120,
                              cwd=root)

    try:
        made = run(str(bin_dir / "initdb"), "-D", str(data), "-U", superuser, "--auth=trust",
                   "-E", "UTF8", "--no-sync")
        if made.returncode:
            pytest.skip(f"PostgreSQL's initdb failed: {(made.stderr or made.stdout)[-500:]}")
        started = None
        for _ in range(3):  # the free port may be taken between the probe and the start
            port = free_port()
            # fsync off: the tests kill clients, never the server, so its durability on power
            # loss is not what they check; it saves seconds on a shared disk.
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root}"
                       " -c fsync=off -c full_page_writes=off -c max_connections=200")
            started = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log_file), "-w",
                          "-t", "60", "-o", options, "start")
            if started.returncode == 0:
                break
        if started is None or started.returncode:
            tail = log_file.read_text()[-800:] if log_file.exists() else ""
            pytest.skip(f"the PostgreSQL server did not start: {tail or started}")
        try:
            yield PostgresServer("127.0.0.1", port, superuser, data, log_file)
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session."""
    with run_postgres() as server:
        yield server


NewDatabase = Callable[[], Awaitable[str]]


@pytest.fixture
def new_postgres_database(postgres_server: PostgresServer) -> NewDatabase:
    """``await new_postgres_database()``: the SQLAlchemy URL of a fresh, empty database."""

    async def new() -> str:
        return postgres_server.url(await postgres_server.create_database())

    return new
