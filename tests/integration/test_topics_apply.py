"""`opsloop topics apply` against the real broker: create, then idempotent, drift reported not changed."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.cli.main import main
from streams.kafka.admin import observe
from streams.kafka.catalogue import load_catalogue
from streams.settings import Settings

TOPICS = len(load_catalogue())


def test_apply_twice_second_run_changes_nothing(settings: Settings, capsys):
    assert main(["topics", "apply"]) == 0
    first = capsys.readouterr().out
    assert first.count("created ") == TOPICS
    assert f"created {settings.topic_prefix}outbox (12 partitions, replication 1)" in first

    assert main(["topics", "apply"]) == 0
    second = capsys.readouterr().out
    assert "created" not in second and "differs" not in second
    assert f"no change: {TOPICS} topics match topics.yaml" in second


def test_drift_is_reported_and_left_alone(settings: Settings, capsys):
    outbox = settings.topic_prefix + "outbox"

    async def precreate_and_observe(action):
        admin = AIOKafkaAdminClient(**settings.kafka_client_config())
        await admin.start()
        try:
            return await action(admin)
        finally:
            await admin.close()

    asyncio.run(
        precreate_and_observe(
            lambda a: a.create_topics([NewTopic(outbox, 2, 1, topic_configs={"retention.ms": "60000"})])
        )
    )
    assert main(["topics", "apply"]) == 2
    out = capsys.readouterr().out
    assert (
        f"differs {outbox}: partitions 2 (topics.yaml says 12); retention.ms 60000 (topics.yaml says 604800000)" in out
    )
    assert out.count("created ") == TOPICS - 1

    observed, _ = asyncio.run(precreate_and_observe(lambda a: observe(a, [outbox])))
    assert observed[outbox].partitions == 2  # reported, never altered
    assert observed[outbox].configs["retention.ms"] == "60000"


def test_apply_returns_with_every_partition_led_so_a_first_produce_needs_no_retry(settings: Settings, caplog):
    """Right after CreateTopics a partition may have no leader yet; a producer sending then gets
    NotLeaderForPartition and aiokafka logs each retry as an error. apply waits the election out."""
    from streams.kafka.producer import EventProducer

    async def apply_then_send_to_every_partition():
        from streams.kafka.admin import apply

        await apply(settings, load_catalogue())
        admin = AIOKafkaAdminClient(**settings.kafka_client_config())
        await admin.start()
        try:
            described = await admin.describe_topics([settings.topic_prefix + "events.telemetry"])
        finally:
            await admin.close()
        async with EventProducer(settings) as producer:
            for p in range(12):
                await producer.kafka.send_and_wait(
                    settings.topic_prefix + "events.telemetry", b"x", key=b"k", partition=p
                )
        return described

    with caplog.at_level("WARNING"):
        described = asyncio.run(apply_then_send_to_every_partition())
    assert [p["leader"] >= 0 for p in described[0]["partitions"]] == [True] * 12
    retries = [r.getMessage() for r in caplog.records if "Got error produce response" in r.getMessage()]
    assert retries == []
