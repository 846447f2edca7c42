"""``opsloop projector`` as a child process of the fault harness, and when it has caught up.

The PostgreSQL scenario stops the database under the projector as well as under the
ledger: once the database is back, the audit tables must hold every record of the run
exactly once (the projector is idempotent by record id and keeps its offsets in the same
transaction as its rows).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa

from streams.devtools import childproc
from streams.settings import ROOT


class ProjectorProcess:
    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProjectorProcess:
        with open(self.log_path, "ab") as log:
            self.proc = childproc.spawn(
                [sys.executable, "-m", "streams.cli.main", "projector", "--batch-max", "200"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        childproc.stop(self.proc, 30)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_projected(
    url: str, want: Mapping[str, int], projector: ProjectorProcess, timeout: float = 120.0
) -> dict[str, int]:
    """Until the audit tables hold ``want`` rows (table -> count); raises with the counts and the log's tail."""
    from streams.audit import store

    engine = sa.create_engine(url)
    counts: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                counts = store.count_rows(engine)
            except sa.exc.DBAPIError:  # not migrated yet, or the database is still coming back
                counts = {}
            if counts and all(counts.get(t) == n for t, n in want.items()):
                return counts
            if not projector.alive:
                break
            time.sleep(0.2)  # polling the database for a condition, with a deadline
    finally:
        engine.dispose()
    state = "exited" if not projector.alive else f"after {timeout:.0f}s"
    raise AssertionError(f"projector {state}: rows {counts}, wanted {dict(want)}; log:\n{projector.log()[-2000:]}")
