"""Child processes that never outlive their parent process, and one way to stop them.

The demo, ``opsloop dev`` and the tests start real servers (Kafka, workers, ingest,
prometheus) as children. :func:`spawn` makes the kernel kill a child when the
process that started it dies, however it dies.

The kernel's parent-death signal (PR_SET_PDEATHSIG) follows the *thread* that forked
the child, not the process: a child started from a worker thread is killed as soon
as that thread exits. So a child spawned from the main thread gets the signal
directly, and one spawned from any other thread runs under a small keeper (this
module's ``__main__``) started with the signal tied to it and holding the read end of
a pipe whose write end only the parent process holds: when the parent process exits
(the kernel closes its descriptors, whatever thread is running), the keeper sees EOF
and kills the child. ``stop`` asks politely (SIGTERM, forwarded by the keeper, so
faust flushes and commits) and insists (SIGKILL) after a timeout.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

PR_SET_PDEATHSIG = 1
# Write ends of keepers' lifelines: held for the life of this process (never closed by us).
_LIFELINES: list[int] = []


def die_with_parent() -> None:
    """``preexec_fn`` for Popen: runs in the child before exec (main thread only: see the module doc)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(cmd, **popen)`` for a child that dies with this process, from any thread."""
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(list(cmd), preexec_fn=die_with_parent, **popen)
    read_fd, write_fd = os.pipe()
    os.set_inheritable(read_fd, True)
    _LIFELINES.append(write_fd)
    keeper = [sys.executable, "-m", "streams.devtools.childproc", str(read_fd), "--", *cmd]
    try:
        return subprocess.Popen(keeper, pass_fds=(read_fd, *popen.pop("pass_fds", ())), **popen)
    finally:
        os.close(read_fd)


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 30.0) -> int | None:
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


def kill(proc: subprocess.Popen[Any] | None) -> None:
    """SIGKILL and reap: a crash, for fault tests (a keeper's child dies with the keeper)."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _keep(lifeline: int, cmd: list[str]) -> int:
    """Run ``cmd`` until it exits or the process holding ``lifeline``'s write end dies."""
    child = subprocess.Popen(cmd, preexec_fn=die_with_parent)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda n, _frame: child.send_signal(n))
    while child.poll() is None:
        try:
            ready, _, _ = select.select([lifeline], [], [], 0.5)
        except InterruptedError:
            continue
        if ready and not os.read(lifeline, 1):  # EOF: the parent process is gone
            child.kill()
            break
    return child.wait()


if __name__ == "__main__":
    sys.exit(_keep(int(sys.argv[1]), sys.argv[3:]))
