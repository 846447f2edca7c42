"""``opsloop worker`` with faust's ``processing_guarantee="exactly_once"`` (an experiment, issue 16).

The issue asks to try Kafka transactions for decide (state changelog, effects and
offsets in one transaction) under the fault harness and to offer it as a setting only if
it passes. The product has no such setting, so the attempt runs through this wrapper
(``python -m tests.faults --processing-guarantee exactly_once``): it makes every
``faust.App`` the worker builds transactional, puts decide's produce batches into the
transaction of their input partition (:class:`PartitionTransactions`), then runs the real CLI. What it showed is in
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


class PartitionTransactions:
    """What decide's ``PartitionBatcher`` takes for a producer: each produce batch goes to the
    transaction faust keeps for the *input* partition of the same number.

    Under exactly_once faust runs one transactional producer per assigned input partition
    (``{app id}-{group}-{partition}``), sends table changelog records through it and commits the
    input offsets into its transaction. Decide's effects and decisions go out as produce batches
    on faust's plain producer (``streams.kafka.compat.kafka_producer``), outside any transaction;
    they are co-partitioned with the input (same key, same partition count), so the batch for
    output partition p belongs in input partition p's transaction."""

    def __init__(self, app: Any, source_topic: str) -> None:
        self.app = app
        self.source_topic = source_topic

    def _tid(self, partition: int) -> str:
        group = self.app.assignor.group_for_topic(self.source_topic)
        return f"{self.app.conf.id}-{group}-{partition}"

    def create_batch(self) -> Any:
        producers = self.app.producer._transaction_producers  # noqa: SLF001 - faust keeps them there
        if not producers:
            raise RuntimeError("no transaction producer: no input partition assigned")
        return next(iter(producers.values())).create_batch()  # a transactional builder; all share settings

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        tid = self._tid(partition)
        producer = self.app.producer
        async with producer._trn_locks[tid]:  # noqa: SLF001 - as faust's own transactional send
            return await producer._transaction_producers[tid].send_batch(batch, topic, partition=partition)  # noqa: SLF001


def install(guarantee: str) -> None:
    import faust

    from agents import decide
    from streams.kafka import app as kafka_app

    original = faust.App

    def transactional_app(*args: Any, **kwargs: Any) -> Any:
        app = original(*args, processing_guarantee=guarantee, **kwargs)
        # faust decides ``in_transaction`` (in_worker and exactly_once) once, cached, and its consumer copies
        # it when first built; opsloop builds tables and agents before faust.Worker sets ``in_worker``, so
        # without this the app would run exactly_once configured but without a single transaction.
        app.in_worker = True
        return app

    kafka_app.faust.App = transactional_app  # type: ignore[misc] - the one call site, streams/kafka/app.py

    def transactional_batches(app: Any) -> PartitionTransactions:
        from streams.kafka.catalogue import EVENT_TOPICS
        from streams.settings import Settings

        return PartitionTransactions(app, Settings.from_env().topic_prefix + EVENT_TOPICS[0])

    decide.kafka_producer = transactional_batches  # type: ignore[assignment] - decide's one producer use


if __name__ == "__main__":
    install(os.environ.get(GUARANTEE_ENV, "exactly_once"))
    from streams.cli.main import main

    sys.exit(main())
