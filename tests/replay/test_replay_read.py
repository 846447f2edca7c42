"""What ``opsloop replay`` reads: what decide would dead-letter is counted, not replayed.

Found from outside: a probe wrote every record type to every topic of a running ``opsloop dev``
under random keys; decide and the projector dead-lettered what was not theirs, and ``opsloop
replay`` then stopped with a traceback (``KeyError: 'event_id'``, a delivery receipt read as an
event). Real broker.
"""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.codec import default_codec
from streams.kafka.producer import EventProducer
from tests.audit.records import event
from tests.replay.traffic import read_recorded

pytestmark = pytest.mark.integration

CODEC = default_codec()


def test_replay_counts_records_decide_dead_letters_and_reads_on(topics):
    settings = topics
    good = {**event(0, "acme:alert:A:db"), "event_id": "good"}
    stray = {**event(1, "acme:alert:A:db"), "event_id": "stray"}
    delivery = {"effect_id": "x", "channel": "slack", "status": "delivered", "completed_at": 1}

    async def run() -> None:
        async with EventProducer(settings, linger_ms=5) as producer:
            sends = [
                ("events.telemetry", b"acme:alert:A:db", CODEC.encode("opsloop.Event", good)),
                # keyed for another session
                ("events.telemetry", b"acme:alert:B:web", CODEC.encode("opsloop.Event", stray)),
                ("events.telemetry", b"acme:alert:A:db", CODEC.encode("opsloop.Delivery", delivery)),  # another type
                ("decisions", b"acme:alert:A:db", CODEC.encode("opsloop.Event", good)),  # not a decision
            ]
            for topic, key, value in sends:
                await (await producer._producer.send(producer.topic(topic), value, key=key))

    asyncio.run(run())
    recorded = read_recorded(settings, 0, 2**62)
    assert list(recorded.events) == ["good"] and recorded.decisions == [] and recorded.undecodable == 3
