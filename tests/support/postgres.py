"""A throwaway PostgreSQL cluster from Debian's packages, on a free loopback port.

The server binaries are found as ``opsloop dev`` finds them (streams/devtools/postgres.py);
unlike its kept cluster, this one is made for one test session: initdb + pg_ctl in a temporary directory, trust auth, fsync off (a test cluster
holds nothing worth a disk flush). PostgreSQL refuses to run as root, so under root
the server runs as the ``postgres`` system user the Debian package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from streams.devtools.broker import free_port
from streams.devtools.postgres import PostgresError, pg_bindir


def server_bindir() -> Path:
    """Where initdb and pg_ctl are (the discovery ``opsloop dev`` uses), or a named error."""
    bindir = pg_bindir()
    if bindir is None:
        raise PostgresError("no PostgreSQL server binaries (initdb) found; install Debian's postgresql package")
    return bindir


class LocalPostgres:
    def __init__(self) -> None:
        self.bindir = server_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="opsloop-pg-"))
        self.datadir = self.root / "data"
        self.port = free_port()
        self.user = "opsloop"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError("running as root but there is no 'postgres' user to run the server as") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._as_user, *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise PostgresError(
                f"{Path(cmd[0]).name} failed ({proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            )

    def start(self) -> LocalPostgres:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        return self.resume()

    def resume(self) -> LocalPostgres:
        """Start the server on the cluster ``start`` made (again after ``pause``), on the same port."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def pause(self) -> None:
        """Stop the server and keep the cluster (the fault harness's outage): ``-m fast`` cuts every session."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                [*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)
