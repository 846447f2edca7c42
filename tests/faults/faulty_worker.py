"""``opsloop worker`` with a classifier that raises on a marked event (the harness's classifier fault).

The product has no setting that selects a classifier module, and a fault hook does not
belong in it, so the harness runs its workers through this wrapper
(``python -m tests.faults.faulty_worker worker``): it wraps ``agents.runtime.load_classify``
so that a batch holding an event labelled ``opsloop_fault=classifier-raises`` makes the
classifier raise, then runs the real CLI. What the product must do with that is its own
rule (``agents/decide.py``, ``Decider.classify``): the keyword rules decide the batch,
each decision flagged ``fallback``; nothing is lost, the worker keeps going.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from streams.devtools.processes import WorkerProcess

FAULT_LABEL = "opsloop_fault"
RAISES = "classifier-raises"


class ClassifierFault(RuntimeError):
    """The injected classifier failure."""


def raising(classify: Any) -> Any:
    """``classify`` that raises for a batch holding a marked event."""

    def wrapped(events: Sequence[dict[str, Any]]) -> Any:
        if any((e.get("labels") or {}).get(FAULT_LABEL) == RAISES for e in events):
            raise ClassifierFault("injected by the fault harness: the classifier raises on a marked event")
        return classify(events)

    return wrapped


class FaultyWorkerProcess(WorkerProcess):
    """A real worker process whose classifier raises on marked events."""

    module = "tests.faults.faulty_worker"


def install() -> None:
    from agents import runtime

    load = runtime.load_classify

    def load_classify() -> tuple[Any, str]:
        classify, source = load()
        return raising(classify), source

    runtime.load_classify = load_classify


if __name__ == "__main__":
    install()
    from streams.cli.main import main

    sys.exit(main())
