"""The I/O shell of the topic catalogue: ask the cluster, create what is missing."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.settings import Settings
from streams.topics import ObservedTopic, Plan, TopicSpec, plan


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
            new = []
            for spec in result.create:
                rf = min(spec.replication, brokers)
                new.append(NewTopic(spec.name, spec.partitions, rf, topic_configs=spec.kafka_configs(rf)))
            await admin.create_topics(new, timeout_ms=30000)
        return result
    finally:
        await admin.close()


def render(result: Plan, dry_run: bool = False) -> str:
    """The report ``opsloop topics apply`` prints."""
    lines = [f"note: {note}" for note in result.notes]
    verb = "would create" if dry_run else "created"
    for spec in result.create:
        lines.append(f"{verb} {spec.name} ({spec.partitions} partitions, replication {min(spec.replication, result.replication)})")
    for name, diffs in sorted(result.drift.items()):
        lines.append(f"differs {name}: " + "; ".join(diffs) + " (not changed; alter it by hand or with kafka tools)")
    if not result.create and not result.drift:
        lines.append(f"no change: {len(result.matching)} topics match topics.yaml")
    elif result.matching:
        lines.append(f"unchanged: {len(result.matching)} topics match topics.yaml")
    return "\n".join(lines)
