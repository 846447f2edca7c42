"""Running opsloop workers as child processes (the demo and the integration tests).

A worker is a real ``opsloop worker`` process, so tests exercise the same start-up,
rebalance and shutdown paths production does, and fault tests can SIGKILL it. The
child dies with its parent (PR_SET_PDEATHSIG), so nothing outlives a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from streams.devtools import childproc
from streams.settings import ROOT

# Consumer-group timing that lets a worker join, and a restarted one rejoin, in
# seconds instead of faust's production minute.
FAST_GROUP_ENV = {
    "OPSLOOP_BROKER_SESSION_TIMEOUT_S": "6",
    "OPSLOOP_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
    "OPSLOOP_BROKER_REBALANCE_TIMEOUT_S": "10",
    "OPSLOOP_COMMIT_INTERVAL_S": "0.5",
}


class WorkerProcess:
    # The module run as ``python -m``: the fault harness runs a test-only wrapper that installs a fault hook first.
    module = "streams.cli.main"

    def __init__(self, env: Mapping[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, **env}
        self.log_path = Path(log_path)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = childproc.spawn(
            [sys.executable, "-m", self.module, "worker", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (faust flushes and commits on the way out); SIGKILL if stuck."""
        code, self.proc = childproc.stop(self.proc, timeout), None
        return code

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, as a crash would."""
        childproc.kill(self.proc)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
