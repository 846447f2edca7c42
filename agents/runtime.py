"""The one object a worker builds at start-up and hands to every agent.

Everything the agents share lives here, built once from the settings: the faust app
and its topics, the codec and the topic specs, the tables decide writes and the
ticker reads, the runbook set (a broken set stops the start with file:line), the
classifier, the receivers and the clock of each partition. No agent keeps state at
module level or depends on another agent having been registered before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
from faust.types.tables import GlobalTableT, TableT

from streams.core.decide import Verdict
from streams.core.timers import PartitionClock
from streams.kafka.app import KafkaApp, create_app
from streams.kafka.catalogue import TopicSpec
from streams.kafka.codec import Codec
from streams.model.receivers import Receiver
from streams.model.runbooks import RunbookSet, load_runbook_set
from streams.settings import Settings

log = logging.getLogger(__name__)

# The most records an agent handles in one step of the event loop before it gives the others a
# turn. The worker's agents share one loop: in a storm a decide batch of 500 or a tick with
# thousands of due timers held it 50-160 ms at a time, and a slow receiver's lanes, each due back
# every 0.1 s, lost turns (E2E's first 3 s at 115-159 notifications of the receiver's 240;
# deploy/bench/BENCHMARKS.md). A slice is a few ms of work. (The sinks' intake of a burst of
# outbox records was sliced too, and the first seconds got no better: not kept.)
LOOP_SLICE = 64

T = TypeVar("T")


async def in_slices(items: Sequence[T], size: int = LOOP_SLICE) -> AsyncIterator[Sequence[T]]:
    """``items`` ``size`` at a time, with a turn of the event loop between one slice and the next."""
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + size]


Classify = Callable[[Sequence[dict[str, Any]]], list[Verdict]]


@dataclass
class Tables:
    """The changelog-backed tables decide keeps (see :mod:`streams.core.tables` for what goes in them)."""

    sessions: TableT[str, Any]  # session key -> session state (encoded), co-partitioned with the events
    timers: TableT[str, Any]  # session key -> {"p": partition, "org": org, "t": pending timers}: the ticker's index
    silences: GlobalTableT  # silence id -> silence JSON (every worker needs all)
    inhibitors: GlobalTableT  # session key -> routing labels of its firing alerts that can inhibit


@dataclass
class Runtime:
    """What one worker's agents share."""

    kafka: KafkaApp
    runbooks: RunbookSet
    classify: Classify
    classifier_source: str  # "model" or "keyword" (the model could not be loaded)
    receivers: dict[str, Receiver]
    tables: Tables
    clock: PartitionClock  # per events.* partition, fed by decide, read by the ticker and the scheduler
    # Run when the worker is told to stop, before faust stops its consumer (agents.worker.QuietWorker.on_stop).
    before_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run when a rebalance takes this worker's partitions, before faust waits for the agents' records
    # (streams.kafka.revoke).
    before_revoke: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def app(self) -> faust.App:
        return self.kafka.app

    @property
    def settings(self) -> Settings:
        return self.kafka.settings

    @property
    def codec(self) -> Codec:
        return self.kafka.codec

    @property
    def specs(self) -> dict[str, TopicSpec]:
        return self.kafka.specs

    def topic(self, name: str) -> faust.TopicT:
        return self.kafka.topic(name)

    def physical(self, name: str) -> str:
        return self.kafka.physical(name)


def load_classify() -> tuple[Classify, str]:
    """The classifier's batched predict as a Classify; the keyword rules while the model is unavailable."""
    try:
        from classifier import load_classifier

        clf = load_classifier()
        source = "model"
    except Exception as exc:  # noqa: BLE001 - logged, and every decision record names the version used
        from classifier.keyword import KeywordClassifier

        log.warning("classifier model unavailable (%s: %s); using the keyword rules", type(exc).__name__, exc)
        clf, source = KeywordClassifier(), "keyword"
    return verdicts_of(clf), source


def verdicts_of(clf: Any, *, fallback: bool = False) -> Classify:
    """A classifier's ``predict_batch`` as decide's verdicts (``fallback`` flags every one, e.g. the keyword rules
    answering for a model that failed)."""

    def classify(events: Sequence[dict[str, Any]]) -> list[Verdict]:
        return [Verdict.of(p, fallback=fallback) for p in clf.predict_batch(events)]

    return classify


def load_receivers(settings: Settings) -> dict[str, Receiver]:
    """The routing file's receivers plus the built-in ones (a broken file raises ConfigError)."""
    from agents.sinks.channels import specs
    from streams.model.receivers import builtin_receivers
    from streams.model.receivers import load_receivers as load

    path = settings.receivers_path()
    if not path.exists():
        log.warning("no routing file at %s: only the built-in 'log' receiver is available", path)
        return builtin_receivers()
    return {**builtin_receivers(), **load(path, channels=specs())}


def declare_tables(kafka: KafkaApp) -> Tables:
    app, partitions = kafka.app, kafka.specs["events.telemetry"].partitions
    # Session state keyed by session key, as bytes (streams.core.state.encode_state; records of older
    # changelogs are JSON, read raw and decoded the same way); the changelog partition follows the
    # source event's partition (see streams.kafka.compat.set_current_event), so state is co-partitioned
    # with the events.
    sessions = app.Table("sessions", default=None, partitions=partitions, value_type=bytes)
    timers = app.Table("timers", default=None, partitions=partitions)
    # Every worker needs all silences and all inhibiting alerts: global tables (one
    # partition, as faust advises for global tables with several workers). Their
    # changelogs must exist before the worker joins its group (faust's leader assigns
    # before it declares them): ``run_worker`` creates every changelog first.
    silences = app.GlobalTable("silences", default=None, partitions=1, use_partitioner=True, recovery_buffer_size=1)
    inhibitors = app.GlobalTable("inhibitors", default=None, partitions=1, use_partitioner=True, recovery_buffer_size=1)
    return Tables(sessions=sessions, timers=timers, silences=silences, inhibitors=inhibitors)


def build_runtime(
    settings: Settings,
    *,
    replication: int | None = None,
    runbooks: RunbookSet | None = None,
    classify: Classify | None = None,
    receivers: Mapping[str, Receiver] | None = None,
) -> Runtime:
    """Build what the agents share; a broken runbook set or routing file raises ConfigError (file:line) here."""
    kafka = create_app(settings, replication=replication)
    from agents.sinks.channels import specs

    rset = runbooks or load_runbook_set(settings.runbooks_dir, channels=specs())
    source = "given"
    if classify is None:
        classify, source = load_classify()
    log.info("runbook set %s (%d runbooks) from %s", rset.version, len(rset.runbooks), rset.directory or "built in")
    return Runtime(
        kafka=kafka,
        runbooks=rset,
        classify=classify,
        classifier_source=source,
        receivers=dict(receivers) if receivers is not None else load_receivers(settings),
        tables=declare_tables(kafka),
        clock=PartitionClock(),
    )
