"""Reading whole topics without a consumer group: for tail, the demo, tests and audits.

Assigns every partition of the named topics and reads from the beginning (or the
end), decoding each record with the codec as the schema topics.yaml gives its topic: a
well-formed record of another type is an undecodable record with that reason, not a dict
missing the fields its reader needs (``opsloop dlq list`` stopped with a KeyError on one).
A reader never commits offsets, so it never disturbs the workers' consumer group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import TopicNotFoundError
from streams.kafka.catalogue import value_schemas
from streams.kafka.codec import Codec, CodecError, default_codec
from streams.kafka.compat import refresh_metadata
from streams.settings import Settings


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any] | None  # None when the bytes did not decode
    raw: bytes
    timestamp: int
    error: str | None = None


class TopicReader:
    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        *,
        from_beginning: bool = True,
        codec: Codec | None = None,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        """``isolation_level="read_committed"`` skips records of aborted (and open) Kafka transactions."""
        self.settings = settings
        self.topics = [settings.topic_prefix + t for t in topics]
        self.from_beginning = from_beginning
        self.codec = codec or default_codec()
        self.schemas = value_schemas(settings.topics_file)
        self._consumer = AIOKafkaConsumer(
            **settings.kafka_client_config(), enable_auto_commit=False, group_id=None, isolation_level=isolation_level
        )

    async def __aenter__(self) -> TopicReader:
        try:
            await self._consumer.start()
            await self._assign()
        except BaseException:
            await self._consumer.stop()  # a failed start leaves no open connection (or "Unclosed" warning) behind
            raise
        return self

    async def _assign(self) -> None:
        partitions = []
        for topic in self.topics:
            for p in sorted(await self._partitions_of(topic)):
                partitions.append(TopicPartition(topic, p))
        self._consumer.assign(partitions)
        if self.from_beginning:
            await self._consumer.seek_to_beginning(*partitions)
        else:
            await self._consumer.seek_to_end(*partitions)

    async def _partitions_of(self, topic: str, timeout: float = 10.0) -> set[int]:
        deadline = time.monotonic() + timeout
        while True:
            parts: set[int] | None = self._consumer.partitions_for_topic(topic)
            if parts:
                return parts
            if time.monotonic() > deadline:
                raise TopicNotFoundError(topic)
            await refresh_metadata(self._consumer)
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    def _decode(self, msg: Any) -> Record:
        topic = (
            msg.topic[len(self.settings.topic_prefix) :]
            if msg.topic.startswith(self.settings.topic_prefix)
            else msg.topic
        )
        try:
            value, error = self.codec.decode(msg.value, expect=self.schemas.get(topic)), None
        except CodecError as exc:
            value, error = None, str(exc)
        return Record(topic, msg.partition, msg.offset, msg.key, value, msg.value, msg.timestamp, error)

    async def records(self, *, idle_timeout: float | None = None) -> AsyncIterator[Record]:
        """Yield records as they come; stop after ``idle_timeout`` seconds with nothing new."""
        last = time.monotonic()
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            if batch:
                last = time.monotonic()
                for msgs in batch.values():
                    for msg in msgs:
                        yield self._decode(msg)
            elif idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                return

    async def read_to_end(self) -> list[Record]:
        """Every record up to the end offsets as of now (then returns, however quiet or busy the topics are)."""
        partitions = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(partitions)
        out: list[Record] = []
        while [tp for tp, end in ends.items() if await self._consumer.position(tp) < end]:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, msgs in batch.items():
                out.extend(self._decode(m) for m in msgs if m.offset < ends[tp])
        return out

    async def collect(self, until: Callable[[list[Record]], bool], timeout: float) -> list[Record]:
        """Read until ``until(records)`` holds; raises TimeoutError with what was read."""
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        if until(out):
            return out
        while time.monotonic() < deadline:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            for msgs in batch.values():
                for msg in msgs:
                    out.append(self._decode(msg))
            if until(out):
                return out
        raise TimeoutError(
            f"condition not met within {timeout:.0f}s; read {len(out)} records from {', '.join(self.topics)}"
        )
