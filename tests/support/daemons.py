"""Real third-party servers (prometheus, alertmanager, opsloop ingest) run for a test.

A daemon is ready when its ``ready_url`` answers 200; it dies with the test
process (PR_SET_PDEATHSIG), and its log is attached to a failing test's report.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from streams.devtools import childproc


class Daemon:
    """A real third-party server (prometheus, alertmanager) run for a test, ready when ``ready_url`` answers 200."""

    def __init__(self, cmd: Sequence[str], log_path: Path) -> None:
        self.cmd = list(cmd)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    def start(self, ready_url: str, timeout: float = 30.0) -> Daemon:
        log = open(self.log_path, "ab")
        self.proc = childproc.spawn(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[0]} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.cmd[0]} was not ready within {timeout:.0f}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        childproc.stop(self.proc, 15)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Daemons(list):
    def start(self, cmd: Sequence[str], log_path: Path, ready_url: str, timeout: float = 30.0) -> Daemon:
        daemon = Daemon(cmd, log_path)
        self.append(daemon)
        return daemon.start(ready_url, timeout)
