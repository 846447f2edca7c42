"""L1 and L2: plain aiokafka consume → produce loops in the bench process, no stream framework.

L1 forwards the bytes untouched: what the transport alone costs (consumer, producer,
broker). L2 does what a decide worker must do at the least: decode each event with the
project's codec, classify the batch in one call, fold each event with the pure
``decide`` into a state kept in a dict, encode the effects and decision records and
produce them, waiting for the acks before the next batch (the worker's rule: effects
durable before the state that remembers them). No tables, changelogs, timers, faust:
the application's floor, so L4 / L2 says what the framework around it costs.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from streams.devtools.bench.measure import Bar, CpuWindow
from streams.devtools.bench.report import BUSY_KEY, Level

# One batch step: the records of a getmany() in, the (topic, key, value) to produce out.
Step = Callable[[Sequence[Any]], list[tuple[str, bytes | None, bytes]]]


async def create_topics(settings: Any, names: Sequence[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams.kafka.admin import wait_for_leaders

    admin = AIOKafkaAdminClient(**settings.kafka_client_config())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
        await wait_for_leaders(admin, list(names), settings)
    finally:
        await admin.close()


def event_partitions(settings: Any) -> int:
    from streams.kafka.catalogue import load_catalogue

    return next(s.partitions for s in load_catalogue(settings.topics_file) if s.name == "events.telemetry")


async def consume_produce(
    name: str, settings: Any, n: int, step: Step, timeout: float, progress: Bar, pids: Mapping[str, int]
) -> Level:
    """Read the pre-loaded ``events.telemetry`` from the start, hand each batch to ``step`` and produce what it
    returns, waiting for the acks; timed (wall and this process's CPU) from the first batch to the n-th event."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    conf = settings.kafka_client_config()
    consumer = AIOKafkaConsumer(
        settings.topic_prefix + "events.telemetry",
        **conf,
        group_id=f"bench-{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(**conf, linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    cpu = CpuWindow({"bench (this process)": os.getpid(), **pids})
    moved, started = 0, None
    deadline = time.monotonic() + timeout
    try:
        while moved < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=2_000)
            if not batches:
                continue
            if started is None:
                started = time.perf_counter()
                cpu.start()
            records = [r for rs in batches.values() for r in rs]
            acks = [await producer.send(topic, value, key=key) for topic, key, value in step(records)]
            await asyncio.gather(*acks)
            moved += len(records)
            progress.update(min(moved, n))
    finally:
        progress.done()
        await consumer.stop()
        await producer.stop()
    cpu.stop()
    if moved < n:
        raise TimeoutError(f"{name} moved {moved} of {n} events in {timeout:.0f}s")
    seconds = time.perf_counter() - (started or 0.0)
    return Level(name, n, seconds, cpu.used, cpu.rss, extra={BUSY_KEY: cpu.machine})


async def passthrough(
    settings: Any, n: int, timeout: float, progress: Bar, pids: Mapping[str, int] | None = None
) -> Level:
    """L1: the same bytes to ``bench.passthrough``."""
    sink = settings.topic_prefix + "bench.passthrough"
    await create_topics(settings, [sink], event_partitions(settings))

    def step(records: Sequence[Any]) -> list[tuple[str, bytes | None, bytes]]:
        return [(sink, r.key, r.value) for r in records]

    return await consume_produce("L1 aiokafka passthrough", settings, n, step, timeout, progress, pids or {})


def classify_fn() -> Callable[[Sequence[Mapping[str, Any]]], list[Any]]:
    """The classifier the worker loads (the model, or the keyword rules when it cannot be loaded), batched."""
    from streams.core.decide import Verdict

    try:
        from classifier import load_classifier

        clf: Any = load_classifier()
    except Exception:  # noqa: BLE001 - as the worker: the keyword rules answer when the model is unavailable
        from classifier.keyword import KeywordClassifier

        clf = KeywordClassifier()

    def classify(events: Sequence[Mapping[str, Any]]) -> list[Any]:
        return [Verdict.of(p) for p in clf.predict_batch(list(events))]

    return classify


async def app_floor(
    settings: Any,
    n: int,
    timeout: float,
    progress: Bar,
    channels: Mapping[str, Any],
    pids: Mapping[str, int] | None = None,
) -> Level:
    """L2: decode, classify (one call per batch), decide into a dict, encode, produce to bench.l2.* topics."""
    from streams.core.decide import configured_context, decide
    from streams.kafka.codec import default_codec
    from streams.model.effects import to_outbox
    from streams.model.runbooks import load_runbook_set

    outbox, decisions = settings.topic_prefix + "bench.l2.outbox", settings.topic_prefix + "bench.l2.decisions"
    await create_topics(settings, [outbox, decisions], event_partitions(settings))
    codec = default_codec()
    base = configured_context(load_runbook_set(settings.runbooks_dir, channels=channels), settings.ack)
    classify = classify_fn()
    states: dict[str, Any] = {}

    def step(records: Sequence[Any]) -> list[tuple[str, bytes | None, bytes]]:
        events = [codec.decode(r.value, expect="opsloop.Event") for r in records]
        out: list[tuple[str, bytes | None, bytes]] = []
        for record, event, verdict in zip(records, events, classify(events), strict=True):
            session = event["session_key"]
            result = decide(states.get(session), event, replace(base, verdict=verdict))
            states[session] = result.state
            effects = [e for e in result.all_effects if to_outbox(e)]  # as the decide agent: timers ride on decisions
            out += [(outbox, record.key, codec.encode("opsloop.Effect", e)) for e in effects]
            out += [(decisions, record.key, codec.encode("opsloop.Decision", d)) for d in result.all_records]
        return out

    name = "L2 decode+classify+decide+encode"
    return await consume_produce(name, settings, n, step, timeout, progress, pids or {})
