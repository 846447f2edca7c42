"""When is a running pipeline done? When the workers' group has committed to the end of its input.

A worker commits an event's offset only after what deciding it produced (effects,
decision records) was acknowledged by Kafka (agents/decide.py flushes before it
acks; the sinks ack an outbox record once it is settled). So once the group's
committed offset reaches the end offset of every event topic (and of ``outbox``, when
the deliveries are what a test asserts on), every record on them has been handled and
its output is on the broker: reading the output topics to their end offsets then
sees all of it. That is what a test waits for before a negative assertion ("nothing
else was sent"), instead of sleeping and hoping the pipeline was done.
tests/decide/scenario.py builds its ``Topics.quiescent`` / ``settled`` on this.

Each wait polls the broker for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka.admin import group_lag, partitions_of
from streams.kafka.catalogue import EVENT_TOPICS
from streams.settings import Settings


async def commit_lag(settings: Settings, topics: Iterable[str] = EVENT_TOPICS) -> dict[str, int]:
    """Records not yet covered by the group's committed offset, per partition of ``topics`` (only those behind)."""
    config = settings.kafka_client_config()
    admin = AIOKafkaAdminClient(**config)
    consumer = AIOKafkaConsumer(**config, enable_auto_commit=False, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        lag, _ = await group_lag(admin, consumer, settings.app_id, await partitions_of(consumer, settings, topics))
    finally:
        await consumer.stop()
        await admin.close()
    return lag


async def wait_committed(
    settings: Settings, topics: Iterable[str] = EVENT_TOPICS, timeout: float = 60.0, what: str = ""
) -> None:
    """Until the group's commits reach the end of every partition of ``topics`` (end offsets read each poll)."""
    topics = tuple(topics)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        lag = await commit_lag(settings, topics)
        if not lag:
            return
        if loop.time() > deadline:
            raise TimeoutError(
                f"{what or 'quiescence'}: after {timeout:.0f}s the group's commits still trail the log: {lag}"
            )
        await asyncio.sleep(0.2)  # polling the broker for a condition, with a deadline


async def read_to_end(consumer: AIOKafkaConsumer, on_message: Callable[[Any], None], timeout: float = 60.0) -> None:
    """Feed ``on_message`` every record of the consumer's assigned partitions up to their end offsets as of now."""
    ends = await consumer.end_offsets(sorted(consumer.assignment()))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        behind = {tp: end - await consumer.position(tp) for tp, end in ends.items()}
        behind = {tp: n for tp, n in behind.items() if n > 0}
        if not behind:
            return
        if loop.time() > deadline:
            shown = {f"{tp.topic}[{tp.partition}]": n for tp, n in behind.items()}
            raise TimeoutError(f"reading to the end offsets: still behind after {timeout:.0f}s: {shown}")
        batch = await consumer.getmany(timeout_ms=200, max_records=5000)
        for msgs in batch.values():
            for msg in msgs:
                on_message(msg)
