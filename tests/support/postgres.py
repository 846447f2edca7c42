"""A throwaway PostgreSQL cluster for one test session, on a free loopback port.

The cluster ``opsloop dev`` runs (streams/devtools/postgres.py: Debian's server binaries,
trust auth, TCP only, the ``postgres`` system user under root), in a temporary directory
and without durability: fsync off (a test cluster holds nothing worth a disk flush).
``stop`` removes it; ``pause`` and ``resume`` are the fault harness's database outage.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from streams.devtools.broker import free_port
from streams.devtools.postgres import LocalPostgres as KeptPostgres
from streams.devtools.postgres import PostgresError, pg_bindir


def server_bindir() -> Path:
    """Where initdb and pg_ctl are (the discovery ``opsloop dev`` uses), or a named error."""
    bindir = pg_bindir()
    if bindir is None:
        raise PostgresError("no PostgreSQL server binaries (initdb) found; install Debian's postgresql package")
    return bindir


class LocalPostgres(KeptPostgres):
    initdb_args = ("--no-sync",)
    settings = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="opsloop-pg-")), free_port(), server_bindir())

    def pause(self) -> None:
        """Stop the server and keep the cluster: ``-m fast`` cuts every session."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def resume(self) -> LocalPostgres:
        """Start the server again on the cluster ``start`` made, on the same port."""
        self.start()
        return self

    def stop(self) -> None:
        """Stop at once (nothing here is worth a clean shutdown) and remove the cluster."""
        if (self.datadir / "postmaster.pid").exists():
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False
            )
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_url() -> Iterator[str]:
    """A :class:`LocalPostgres` started for a ``with`` block (a test session, a benchmark): its URL; removed after."""
    pg = LocalPostgres().start()
    try:
        yield pg.url
    finally:
        pg.stop()
