"""``opsloop worker`` with faust's ``processing_guarantee="exactly_once"`` (an experiment, issue 16).

The issue asks to try Kafka transactions for decide (state changelog, effects and
offsets in one transaction) under the fault harness and to offer it as a setting only if
it passes. The product has no such setting, so the attempt runs through this wrapper
(``python -m tests.faults --processing-guarantee exactly_once``): it makes every
``faust.App`` the worker builds transactional, then runs the real CLI. What it showed is in
``tests/faults/REPORT.md``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from streams.devtools.processes import WorkerProcess

GUARANTEE_ENV = "OPSLOOP_FAULTS_PROCESSING_GUARANTEE"


class EosWorkerProcess(WorkerProcess):
    """A real worker process whose faust app runs with the guarantee in ``$OPSLOOP_FAULTS_PROCESSING_GUARANTEE``."""

    module = "tests.faults.eos_worker"


def install(guarantee: str) -> None:
    import faust

    from streams.kafka import app as kafka_app

    original = faust.App

    def transactional_app(*args: Any, **kwargs: Any) -> Any:
        return original(*args, processing_guarantee=guarantee, **kwargs)

    kafka_app.faust.App = transactional_app  # type: ignore[misc] - the one call site, streams/kafka/app.py


if __name__ == "__main__":
    install(os.environ.get(GUARANTEE_ENV, "exactly_once"))
    from streams.cli.main import main

    sys.exit(main())
