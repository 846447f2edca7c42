"""``opsloop worker`` that SIGKILLs itself once, in the decide agent, after a batch's produce was
acknowledged and before its state is written (test_digest_kill.py).

The product has no fault hook, so the test runs its workers through this wrapper
(``python -m tests.digest.kill_worker worker``), as the fault harness does
(``tests/faults/faulty_worker.py``): a batch holding an event labelled
``opsloop_fault=kill-after-produce`` kills the process between ``out.flush()`` (its decisions,
effects and digest counts acknowledged by Kafka) and :meth:`agents.decide.DecideAgent.write`,
unless the file named by ``$OPSLOOP_TEST_KILLED`` exists (it is written first: once per test).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from streams.devtools.processes import WorkerProcess

FAULT_LABEL = "opsloop_fault"
KILL = "kill-after-produce"
ONCE_ENV = "OPSLOOP_TEST_KILLED"


class KillWorkerProcess(WorkerProcess):
    """A real worker process that dies once on the marked event's batch."""

    module = "tests.digest.kill_worker"


def install() -> None:
    from agents.decide import DecideAgent

    write = DecideAgent.write

    def killing_write(self: DecideAgent, stream: Any, batch: Any, sends: Any = None, keys: Any = None) -> None:
        marked = any((event.get("labels") or {}).get(FAULT_LABEL) == KILL for event, _, _ in batch.observed)
        once = Path(os.environ[ONCE_ENV])
        if marked and not once.exists():
            once.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        write(self, stream, batch, sends, keys)

    DecideAgent.write = killing_write  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from streams.cli.main import main

    sys.exit(main())
