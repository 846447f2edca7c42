"""The one producer path: validate, stamp, encode, append keyed by session, wait for the ack.

Ingest, ``opsloop produce`` and tests all use :class:`EventProducer`, so there is
one place where acks=all and idempotence are set. ``send`` returns only after Kafka
acknowledged the write; callers answer their clients after that, never before.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from streams import metrics
from streams.errors import TopicNotFoundError
from streams.kafka.codec import Codec, default_codec
from streams.model.records import InvalidEventError, stamp, topic_for, validate_event
from streams.settings import Settings

# One event's encoded value at most: under the producer's request limit and the broker's
# message.max.bytes (both 1 MiB by default) with room for the key and the batch headers.
MAX_EVENT_BYTES = 1_000_000


def now_ms() -> int:
    return int(time.time() * 1000)


def prepare_event(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An event validated and stamped as it is appended: a fresh id, received now (raises InvalidEventError
    naming the field)."""
    return stamp(validate_event(raw), event_id=uuid.uuid4().hex, received_at=now_ms())


def encode_event(codec: Codec, event: Mapping[str, Any]) -> bytes:
    """The event's Avro bytes; one that would be refused by Kafka as too large is an InvalidEventError instead."""
    value = codec.encode("opsloop.Event", event)
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEventError(
            "event", f"{len(value):,} bytes encoded, over the {MAX_EVENT_BYTES:,}-byte limit of one Kafka record"
        )
    return value


class EventProducer:
    """An idempotent, acks=all producer of opsloop events (and other records)."""

    def __init__(
        self, settings: Settings, codec: Codec | None = None, *, idempotent: bool = True, **producer_kwargs: Any
    ) -> None:
        self.settings = settings
        self.codec = codec or default_codec()
        self._producer = AIOKafkaProducer(
            **settings.kafka_client_config(),
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=producer_kwargs.pop("linger_ms", 5),
            **producer_kwargs,
        )
        self._topics_seen: set[str] = set()
        self._topic_check = asyncio.Lock()  # a post of 100 events to a new topic asks the cluster once

    @property
    def kafka(self) -> AIOKafkaProducer:
        """The one aiokafka producer this wraps."""
        return self._producer

    async def start(self) -> EventProducer:
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()  # a failed start leaves no connection (or "Unclosed" warning) behind
            raise
        return self

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def topic(self, name: str) -> str:
        """The physical topic for a catalogue name (applies the configured prefix)."""
        return self.settings.topic_prefix + name

    async def _existing(self, name: str) -> str:
        """The physical topic for ``name``, once asked of the cluster: a missing one is TopicNotFoundError now.

        aiokafka would instead wait out its request timeout (40 s by default) logging a warning
        per metadata retry, then raise a bare UnknownTopicOrPartitionError; and a broker that
        creates topics on first use would make one without topics.yaml's partitions or policy.
        """
        topic = self.topic(name)
        if topic in self._topics_seen:
            return topic
        async with self._topic_check:
            if topic not in self._topics_seen:
                try:
                    cluster = await self._producer.client.fetch_all_metadata()
                except KafkaError:  # no broker answered: the send says so (KafkaTimeoutError) as it always did
                    return topic
                self._topics_seen.update(t for t in cluster.topics() if t.startswith(self.settings.topic_prefix))
                if topic not in self._topics_seen:
                    raise TopicNotFoundError(topic)
        return topic

    def prepare(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and stamp an event (raises InvalidEventError naming the field)."""
        return prepare_event(raw)

    async def send(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], RecordMetadata]:
        """Append one event to events.<kind>; returns once Kafka acknowledged it."""
        event = self.prepare(raw)
        value = encode_event(self.codec, event)
        meta = await self._producer.send_and_wait(
            await self._existing(topic_for(event)), value, key=event["session_key"].encode()
        )
        metrics.observe_ingested(event["kind"], event["source"])
        return event, meta

    async def send_many(self, raws: Iterable[Mapping[str, Any]]) -> list[tuple[dict[str, Any], RecordMetadata]]:
        """Append many events, pipelined; returns once all are acknowledged, in order."""
        pending = []
        for raw in raws:
            event = self.prepare(raw)
            fut = await self._producer.send(
                await self._existing(topic_for(event)),
                encode_event(self.codec, event),
                key=event["session_key"].encode(),
            )
            pending.append((event, fut))
        done = []
        for event, fut in pending:
            done.append((event, await fut))
            metrics.observe_ingested(event["kind"], event["source"])
        return done

    async def send_record(
        self, topic: str, key: str | bytes | None, schema: str, record: Mapping[str, Any]
    ) -> RecordMetadata:
        """Encode any opsloop record with ``schema`` and append it to catalogue topic ``topic``."""
        topic = await self._existing(topic)
        raw_key = key.encode() if isinstance(key, str) else key
        return await self._producer.send_and_wait(topic, self.codec.encode(schema, record), key=raw_key)

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> RecordMetadata:
        """Append bytes as they are (dead-letter redrive; tests put poison records on a topic)."""
        topic = await self._existing(topic)
        return await self._producer.send_and_wait(topic, value, key=key, headers=list(headers) if headers else None)
