"""A real, throwaway PostgreSQL server for tests and benchmarks: `initdb` in a temporary folder, `pg_ctl start` on
127.0.0.1 on a free port, and `stop()` deletes it all. Not a fake: the real server, only made and unmade here.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user (Debian's package makes
it). The binaries come from `SWITCHBOARD_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else `PATH`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ENV_PG_BIN = "SWITCHBOARD_PG_BIN"
SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 60


class ClusterUnavailable(RuntimeError):
    """The PostgreSQL binaries are missing (install Debian's `postgresql` package) or the server did not start."""


def pg_bin() -> Path:
    """The folder holding `initdb`, `pg_ctl` and `postgres`."""
    if configured := os.environ.get(ENV_PG_BIN):
        return Path(configured)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if versions:
        return Path(versions[-1])
    found = shutil.which("initdb")
    if found is None:
        raise ClusterUnavailable("no PostgreSQL binaries: apt-get install -y postgresql (or set SWITCHBOARD_PG_BIN)")
    return Path(found).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgCluster:
    """One running server; `url(db)` names a database on it, `create_database` makes a fresh one."""

    folder: Path
    port: int
    _run_as: str | None = field(default=None, repr=False)

    @classmethod
    def start(cls, *, fsync: bool = False, max_connections: int = 200, attempts: int = 2) -> PgCluster:
        """initdb + start. fsync off by default: tests need crash safety of the process, not of the machine. A
        failed attempt (the probed port taken meanwhile; an initdb that failed once in a full run for reasons its
        output now shows) is made again in a fresh folder on another port."""
        for attempt in range(1, attempts + 1):
            try:
                return cls._start_once(fsync, max_connections)
            except ClusterUnavailable:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start_once(cls, fsync: bool, max_connections: int) -> PgCluster:
        binaries = pg_bin()
        run_as = SUPERUSER if os.geteuid() == 0 else None
        folder = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            os.chown(folder, user.pw_uid, user.pw_gid)
        cluster = cls(folder=folder, port=free_port(), _run_as=run_as)
        data = folder / "data"
        try:
            cluster._run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER,
                         "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
            fsync_on = "on" if fsync else "off"
            options = (f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync={fsync_on}"
                       f" -c max_connections={max_connections} -c shared_buffers=128MB")
            if not fsync:
                options += " -c synchronous_commit=off -c full_page_writes=off"
            cluster._run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options,
                         "-w", "-t", str(START_TIMEOUT_SECONDS), "start")
        except (subprocess.CalledProcessError, OSError) as exc:
            log = folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            try:
                st = folder.stat()
                owner = f"folder {oct(st.st_mode & 0o7777)} uid {st.st_uid}; "
            except OSError as gone:
                owner = f"folder: {gone}; "
            shutil.rmtree(folder, ignore_errors=True)
            output = getattr(exc, "stderr", None) or b""
            said = output.decode(errors="replace")[-2000:] if isinstance(output, bytes) else str(output)[-2000:]
            raise ClusterUnavailable(f"PostgreSQL did not start: {exc}\n{owner}{said}\n{tail}") from exc
        return cluster

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with `psql` (another client than ours); its unaligned output."""
        psql = shutil.which("psql") or str(pg_bin() / "psql")
        done = subprocess.run([psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, self.url(database)],
                              check=True, capture_output=True, text=True)
        return done.stdout

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            self._run(str(pg_bin() / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)
