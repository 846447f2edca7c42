"""The bench's reader on a real broker: from the end offsets taken before the input, it sees only the new records.

FLAT reads its window's decisions this way: a reader that starts at the beginning of
``decisions`` after a 100,000-alert storm reaches the window's records after the worker has
decided them all, and its CPU window (opened at the first match) measured nothing.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from streams.devtools.bench.measure import Bar, CpuWindow
from streams.devtools.bench.workers import end_offsets, watch
from streams.settings import Settings


def test_a_reader_from_the_end_offsets_sees_only_what_came_after(topics: Settings) -> None:
    settings = topics
    topic = settings.topic_prefix + "decisions"

    async def send(values: list[bytes]) -> None:
        producer = AIOKafkaProducer(**settings.kafka_client_config())
        await producer.start()
        try:
            for i, value in enumerate(values):
                await producer.send_and_wait(topic, value, key=f"k{i}".encode())
        finally:
            await producer.stop()

    asyncio.run(send([b"old-1", b"old-2", b"old-3"]))
    start = asyncio.run(end_offsets(settings, topic, 12))
    assert sum(start.values()) == 3 and set(start) == set(range(12))
    asyncio.run(send([b"new-1", b"new-2"]))

    def key_of(value: bytes) -> str | None:
        return value.decode()

    seen = asyncio.run(
        watch(settings, topic, 2, CpuWindow({}), Bar(0, enabled=False), 30.0, key_of=key_of, start=start)
    )
    assert seen.count == 2
    everything = asyncio.run(watch(settings, topic, 5, CpuWindow({}), Bar(0, enabled=False), 30.0, key_of=key_of))
    assert everything.count == 5  # from the beginning: the old ones too
