"""The dev harness's own flakes, each pinned by the test that would have caught it."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from streams.devtools.broker import new_cluster_id

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_id_never_starts_with_a_dash():
    """1 draw in 16 encodes to a leading "-" (first 6 bits all but the last set), which
    `kafka-storage format -t` read as an option and refused; such a draw is discarded."""
    draws = iter([b"\xf8" + bytes(15), b"\x00" * 16])
    cluster_id = new_cluster_id(lambda: next(draws))
    assert not cluster_id.startswith("-")
    assert base64.urlsafe_b64decode(cluster_id + "==") == b"\x00" * 16
    assert all(not new_cluster_id().startswith("-") for _ in range(2000))


PARENT = textwrap.dedent(
    """
    import sys, threading
    from streams.devtools import childproc

    procs = []
    def start():
        procs.append(childproc.spawn([sys.executable, "-c", "import sys; [print(l.strip(), flush=True) for l in sys.stdin]"],
                                     stdin=__import__("subprocess").PIPE, stdout=__import__("subprocess").PIPE, text=True))
    t = threading.Thread(target=start)
    t.start()
    t.join()
    print(procs[0].pid, flush=True)
    sys.stdin.readline()  # hold on until the test says; then the test kills us
    """
)


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_child_spawned_from_a_thread_outlives_the_thread_but_not_the_process():
    """PR_SET_PDEATHSIG follows the forking thread: a worker started from a helper thread
    used to be SIGKILLed the moment that thread ended. Through the keeper it lives until
    the process that started it dies, and then dies too."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        keeper_pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while _threads(parent.pid) > 1 and time.monotonic() < deadline:  # the spawning thread is gone from the kernel
            time.sleep(0.01)
        assert _threads(parent.pid) == 1
        children = Path(f"/proc/{keeper_pid}/task/{keeper_pid}/children")
        deadline = time.monotonic() + 10
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.01)
        child_pid = int(children.read_text().split()[0])
        assert _alive(keeper_pid) and _alive(child_pid), "the child died with the thread that spawned it"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while (_alive(keeper_pid) or _alive(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid), "the child outlived the process that started it"
