"""Child processes that never outlive their parent, and one way to stop them.

The demo and the tests start real servers (Kafka, workers, ingest, prometheus) as
children. ``die_with_parent`` (PR_SET_PDEATHSIG) makes the kernel kill a child when
the process that started it dies, however it dies; ``stop`` asks politely (SIGTERM,
so faust flushes and commits) and insists (SIGKILL) after a timeout.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess


def die_with_parent() -> None:
    """``preexec_fn`` for Popen: runs in the child before exec."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def stop(proc: subprocess.Popen | None, timeout: float = 30.0) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code (None if there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL and reap: a crash, for fault tests."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
