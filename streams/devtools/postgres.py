"""A local PostgreSQL cluster from the distribution's server binaries (``opsloop dev``).

initdb once into a directory the caller keeps, then ``pg_ctl start`` on a loopback
port with trust auth for the ``opsloop`` user, TCP only (no Unix socket, whose path
would be limited to ~100 characters). PostgreSQL refuses to run as root, so under
root the server runs as the ``postgres`` system user the Debian package creates, and
that user must be able to reach the directory. Debian puts the binaries in
``/usr/lib/postgresql/<version>/bin``, outside ``PATH``; :func:`pg_bindir` looks there
too. (``tests/support/postgres.py`` is the test suite's throwaway variant.)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from streams.errors import UnavailableError


class PostgresError(UnavailableError):
    """The local PostgreSQL could not be found, initialised or started; the message says why."""


def pg_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL's server is not installed."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if out and (Path(out) / "initdb").exists() and (Path(out) / "pg_ctl").exists():
            return Path(out)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(Path(p).parent.name), reverse=True)
    for candidate in versions:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _version(name: str) -> float:
    try:
        return float(name)
    except ValueError:
        return 0.0


class LocalPostgres:
    """One cluster in ``root/data``, its log in ``root/server.log``; kept across ``stop()``/``start()``."""

    user = "opsloop"
    initdb_args: tuple[str, ...] = ()  # extra ``initdb`` arguments (a throwaway cluster skips its fsyncs)
    settings: tuple[str, ...] = ()  # extra server settings, ``name=value`` each

    def __init__(self, root: Path, port: int, bindir: Path) -> None:
        self.root = Path(root)
        self.datadir = self.root / "data"
        self.port = port
        self.bindir = bindir
        self._as_user: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def prepare(self) -> None:
        """Create ``root`` (owned by ``postgres`` under root); raise if the server could not use it."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresError("running as root but there is no 'postgres' user to run the server as") from None
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._as_user = ["runuser", "-u", "postgres", "--"]
        reachable = subprocess.run([*self._as_user, "test", "-w", str(self.root)], capture_output=True)
        if reachable.returncode != 0:
            raise PostgresError(
                f"the postgres user cannot write {self.root} (a parent directory is not searchable by it)"
            )

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A session of its own: Ctrl-C in the terminal reaches opsloop dev, which stops the server in order.
        proc = subprocess.run([*self._as_user, *cmd], capture_output=True, text=True, start_new_session=True)
        if check and proc.returncode != 0:
            raise PostgresError(
                f"{Path(cmd[0]).name} failed ({proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            )
        return proc

    def start(self) -> LocalPostgres:
        self.prepare()
        if not (self.datadir / "PG_VERSION").exists():
            shutil.rmtree(self.datadir, ignore_errors=True)  # a half-made cluster from an interrupted initdb
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                *self.initdb_args,
            )
        if (self.datadir / "postmaster.pid").exists():
            # A server a killed run left behind (or a stale pid file): stop it before starting ours.
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop", check=False)
        settings = ("listen_addresses=127.0.0.1", "unix_socket_directories=", *self.settings)
        options = " ".join([f"-p {self.port}", *(f"-c {setting}" for setting in settings)])
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def server_pid(self) -> int | None:
        """The postmaster's pid while it runs, else None (pg_ctl daemonises it: no child to poll, so its
        ``postmaster.pid`` is read, and the pid it names asked whether it still lives)."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, another user's
            return pid
        try:  # killed but not yet reaped (no init reaping in some containers): gone all the same
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return None
        except (OSError, IndexError):
            pass
        return pid

    def stop(self) -> None:
        """Shut down cleanly (``-m fast``: sessions cut, data flushed); the cluster stays for the next start."""
        if (self.datadir / "postmaster.pid").exists():  # also a server an interrupted start() left running
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop", check=False)
