"""The local broker fixture itself: a function-scoped broker survives SIGKILL and restart."""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.admin import apply
from streams.kafka.catalogue import load_catalogue
from streams.kafka.producer import EventProducer
from streams.kafka.reader import TopicReader
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_killed_broker_restarts_on_the_same_port_with_its_data(kafka_factory, monkeypatch):
    broker = kafka_factory()
    settings = Settings.from_env(kafka_bootstrap=broker.bootstrap, topic_prefix="")
    asyncio.run(apply(settings, load_catalogue()))
    event = {"session_key": "s1", "kind": "telemetry", "type": "alert.firing", "source": "test", "occurred_at": 1}

    async def send() -> None:
        async with EventProducer(settings) as producer:
            await producer.send(event)

    async def read() -> list:
        async with TopicReader(settings, ["events.telemetry"]) as reader:
            return await reader.collect(lambda rs: len(rs) >= 1, timeout=30)

    asyncio.run(send())
    port = broker.port
    broker.kill()
    broker.start()
    assert broker.port == port
    records = asyncio.run(read())
    assert [r.value["session_key"] for r in records] == ["s1"]
