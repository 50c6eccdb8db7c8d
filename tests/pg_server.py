"""A throwaway PostgreSQL server for tests and benchmarks.

Owns: finding Debian's PostgreSQL binaries, `initdb` in a temporary directory, starting the server
on 127.0.0.1 with a free port (as the `postgres` system user when running as root, because
initdb refuses root), and stopping it and removing the directory at exit.

Does not own: installing PostgreSQL (.ci/run does: `apt-get install postgresql`); tests skip with
`why_unavailable()` when it is not there.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

__all__ = ["PgServer", "shared_server", "why_unavailable"]


def _bin_dir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def _run_as() -> list[str]:
    """The prefix that runs a command as a non-root user when we are root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") and _user_exists("postgres"):
        return ["runuser", "-u", "postgres", "--"]
    return []


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def why_unavailable() -> str | None:
    """None when a server can be started here; otherwise why not (for pytest.skip)."""
    if _bin_dir() is None:
        return (
            "PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's `postgresql` "
            "package (.ci/run does this) to run the PostgreSQL ledger tests"
        )
    if os.geteuid() == 0 and not _run_as():
        return "running as root and no `postgres` user to run initdb as (runuser missing?)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (the `postgres` extra)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    def __init__(self, *, fsync: bool = False) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise RuntimeError(why_unavailable())
        self._bin = bin_dir
        self._prefix = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="meshproxy-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        if self._prefix:
            shutil.chown(self.dir, user="postgres", group="postgres")
        self._pg(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
            f"-c fsync={'on' if fsync else 'off'} -c max_connections=50"
        )
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._stopped = False

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._prefix, str(self._bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def new_database(self, name: str) -> str:
        """Create an empty database and return its URL (each test gets its own ledger)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


_shared: PgServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> PgServer:
    """One server per test process, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PgServer()
            atexit.register(_shared.stop)
        return _shared
