"""The I/O shell of the topic catalogue: ask the cluster, create what is missing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from streams.errors import OpsloopError
from streams.kafka.catalogue import ObservedTopic, Plan, TopicSpec, plan
from streams.kafka.compat import refresh_metadata
from streams.settings import Settings


async def observe(admin: AIOKafkaAdminClient, names: Iterable[str]) -> tuple[dict[str, ObservedTopic], int]:
    """What the cluster has for ``names`` (absent ones are left out) and its broker count."""
    cluster = await admin.describe_cluster()
    brokers = len(cluster.get("brokers", [])) or 1
    existing = set(await admin.list_topics())
    wanted = [n for n in names if n in existing]
    observed: dict[str, ObservedTopic] = {}
    if not wanted:
        return observed, brokers
    described = await admin.describe_topics(wanted)
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted])
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            _error, _msg, _rtype, name, entries = resource[:5]
            configs[name] = {entry[0]: entry[1] for entry in entries}
    for topic in described:
        partitions = topic["partitions"]
        observed[topic["topic"]] = ObservedTopic(
            name=topic["topic"],
            partitions=len(partitions),
            replication=len(partitions[0]["replicas"]) if partitions else 0,
            configs=configs.get(topic["topic"], {}),
        )
    return observed, brokers


TOPIC_ALREADY_EXISTS = 36
LEADERS_WAIT_S = 15.0


async def wait_for_leaders(
    admin: AIOKafkaAdminClient, names: list[str], settings: Settings | None = None, timeout: float = LEADERS_WAIT_S
) -> bool:
    """Wait until every partition of ``names`` has a leader that serves it; False if not after ``timeout``.

    A topic is usable a moment after CreateTopics returns: until its partitions' leaders are
    elected and have taken the partition on, a producer's first sends come back
    NotLeaderForPartition and aiokafka logs each retry as an error ("Got error produce response
    ... retrying"). The metadata names a leader before it serves (KRaft), so given ``settings``
    this also asks each leader for the partitions' end offsets (ListOffsets, which aiokafka retries
    quietly). Waiting here keeps that noise out of what `opsloop topics apply`, the demo, the
    worker and the bench print next.
    """
    deadline = time.monotonic() + timeout
    partitions: list[TopicPartition] = []
    while names:
        described = await admin.describe_topics(names)
        led = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and t["partitions"]
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
        }
        if set(names) <= led:
            partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
            break
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    if settings is None or not partitions:
        return True
    consumer = AIOKafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False)
    await consumer.start()
    try:
        await asyncio.wait_for(consumer.end_offsets(partitions), max(0.1, deadline - time.monotonic()))
    except (TimeoutError, KafkaError):
        return False
    finally:
        await consumer.stop()
    return True


class TopicsApplyError(OpsloopError):
    """The cluster refused to create a topic; the message names each topic and the reason."""


def _topic_errors(response: object) -> list[tuple[str, int, str]]:
    """(topic, error code, message) of a CreateTopics response, whatever its version."""
    rows = getattr(response, "topic_errors", None) or getattr(response, "topics", None) or []
    return [(row[0], row[1], row[2] if len(row) > 2 else "") for row in rows]


async def _create(admin: AIOKafkaAdminClient, specs: list[TopicSpec], result: Plan, brokers: int) -> Plan:
    """Create the planned topics; the report says what the broker actually did.

    A topic created by someone else between our look and our create comes back as
    "already exists" (the broker's metadata can trail the controller by a few ms):
    it is looked at again, once visible, and reported as matching or differing.
    """
    new = [
        NewTopic(
            spec.name,
            spec.partitions,
            min(spec.replication, brokers),
            topic_configs=spec.kafka_configs(min(spec.replication, brokers)),
        )
        for spec in result.create
    ]
    errors = _topic_errors(await admin.create_topics(new, timeout_ms=30000))
    failed = {name: (code, msg) for name, code, msg in errors if code not in (0, TOPIC_ALREADY_EXISTS)}
    if failed:
        raise TopicsApplyError(
            "; ".join(f"{name}: {msg or 'error code ' + str(code)}" for name, (code, msg) in sorted(failed.items()))
        )
    raced = {name for name, code, _ in errors if code == TOPIC_ALREADY_EXISTS}
    if not raced:
        return result
    deadline = time.monotonic() + 15
    while True:
        observed, _ = await observe(admin, sorted(raced))
        if raced <= set(observed) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    again = plan([s for s in specs if s.name in raced], observed, brokers)
    return Plan(
        create=[s for s in result.create if s.name not in raced],
        matching=result.matching + again.matching,
        drift={**result.drift, **again.drift},
        replication=result.replication,
        notes=result.notes,
    )


async def apply(settings: Settings, specs: list[TopicSpec], *, dry_run: bool = False) -> Plan:
    """Create the topics the cluster lacks; report, never change, the ones that differ."""
    prefix = settings.topic_prefix
    specs = [replace(s, name=prefix + s.name) for s in specs]
    admin = AIOKafkaAdminClient(**settings.kafka_client_config(), request_timeout_ms=15000)
    await admin.start()
    try:
        observed, brokers = await observe(admin, [s.name for s in specs])
        result = plan(specs, observed, brokers)
        if result.create and not dry_run:
            result = await _create(admin, specs, result, brokers)
            if not await wait_for_leaders(admin, [s.name for s in result.create], settings):
                note = f"some new partitions had no serving leader after {LEADERS_WAIT_S:.0f} s; producers retry until one does"
                result = replace(result, notes=[*result.notes, note])
        return result
    finally:
        await admin.close()


def render(result: Plan, dry_run: bool = False) -> str:
    """The report ``opsloop topics apply`` prints."""
    lines = [f"note: {note}" for note in result.notes]
    verb = "would create" if dry_run else "created"
    for spec in result.create:
        lines.append(
            f"{verb} {spec.name} ({spec.partitions} partitions, replication {min(spec.replication, result.replication)})"
        )
    for name, diffs in sorted(result.drift.items()):
        lines.append(f"differs {name}: " + "; ".join(diffs) + " (not changed; alter it by hand or with kafka tools)")
    if not result.create and not result.drift:
        lines.append(f"no change: {len(result.matching)} topics match topics.yaml")
    elif result.matching:
        lines.append(f"unchanged: {len(result.matching)} topics match topics.yaml")
    return "\n".join(lines)


async def ensure_internal(settings: Settings, wanted: dict[str, int], replication: int) -> list[str]:
    """Create faust's internal topics (table changelogs) that do not exist yet; returns the created.

    faust would create them itself while starting, racing its own partition
    assignor: a table whose changelog appears after the assignment is skipped
    ("Ignoring missing topic") and its recovery then waits forever. Creating them
    before the worker starts takes the race away.
    """
    admin = AIOKafkaAdminClient(**settings.kafka_client_config(), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, partitions, replication, topic_configs={"cleanup.policy": "compact"})
            for name, partitions in sorted(wanted.items())
            if name not in existing
        ]
        if not new:
            return []
        errors = _topic_errors(await admin.create_topics(new, timeout_ms=30000))
        failed = {name: msg for name, code, msg in errors if code not in (0, TOPIC_ALREADY_EXISTS)}
        if failed:
            raise TopicsApplyError("; ".join(f"{name}: {msg}" for name, msg in sorted(failed.items())))
        await wait_for_leaders(admin, [t.name for t in new], settings)
        return [t.name for t in new]
    finally:
        await admin.close()


async def partitions_of(consumer: AIOKafkaConsumer, settings: Settings, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the catalogue ``topics`` (under the settings' prefix), from freshly loaded metadata."""
    await refresh_metadata(consumer)
    return [
        TopicPartition(settings.topic_prefix + t, p)
        for t in topics
        for p in sorted(consumer.partitions_for_topic(settings.topic_prefix + t) or ())
    ]


async def group_lag(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str, tps: list[TopicPartition]
) -> tuple[dict[str, int], dict[TopicPartition, int]]:
    """(records not yet covered by ``group``'s committed offsets, per partition behind; the end offsets read).

    What "done" means for a running pipeline (the test suite's quiescence, the bench's settle): a worker
    commits an event's offset only after its output was acknowledged."""
    offsets = await admin.list_consumer_group_offsets(group)
    committed = {tp: max(meta.offset, 0) for tp, meta in offsets.items()}
    ends = await consumer.end_offsets(tps)
    lag = {
        f"{tp.topic}[{tp.partition}]": e - committed.get(tp, 0) for tp, e in ends.items() if e > committed.get(tp, 0)
    }
    return lag, ends
