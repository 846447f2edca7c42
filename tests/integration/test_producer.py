"""The producer path on the real broker: keyed by session, acknowledged, readable."""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.producer import EventProducer
from streams.kafka.reader import TopicReader
from streams.model.records import InvalidEventError

pytestmark = pytest.mark.integration


def test_send_appends_keyed_by_session_to_the_kind_topic_and_refuses_bad_events(topics):
    settings = topics
    scan = {
        "session_key": "acme:scan:cfg-7",
        "kind": "scan",
        "type": "scan.completed",
        "source": "scanner",
        "occurred_at": 1_700_000_000_000,
        "org": "acme",
        "payload": {
            "scan_id": "s-1",
            "scan_type": "drift",
            "config_id": "cfg-7",
            "status": "findings",
            "findings": [{"resource": "aws_s3_bucket.logs", "change_type": "update", "severity": "high"}],
        },
    }

    async def run():
        async with EventProducer(settings) as producer:
            event, meta = await producer.send(scan)
            with pytest.raises(InvalidEventError, match="^kind: unknown kind"):
                await producer.send({**scan, "kind": "metrics"})
        async with TopicReader(settings, ["events.scan", "events.telemetry"]) as reader:
            records = await reader.collect(lambda rs: len(rs) >= 1, timeout=20)
        return event, meta, records

    event, meta, records = asyncio.run(run())
    assert meta.topic == settings.topic_prefix + "events.scan" and meta.offset == 0
    assert len(records) == 1
    record = records[0]
    assert record.topic == "events.scan" and record.key == b"acme:scan:cfg-7"
    assert record.value["event_id"] == event["event_id"] and len(event["event_id"]) == 32
    assert record.value["received_at"] > 0
    assert record.value["payload"]["findings"][0]["resource"] == "aws_s3_bucket.logs"
