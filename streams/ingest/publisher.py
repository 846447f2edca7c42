"""The ingest's side of Kafka: one EventProducer, bounded waits, nothing 2xx'd unacknowledged.

Ingest answers 2xx only after Kafka acknowledged (``EventProducer`` sends with
acks=all and idempotence and returns only on the ack). Views validate and encode
each event once (so bad input is a 400 before anything is sent); the bytes go out
through ``EventProducer.send_raw``, pipelined. What this module adds is the failure
side:

* **Bounded waits.** An idempotent aiokafka producer never expires a batch (it
  retries until the broker is back), so a post would hang for as long as the broker
  is down. Each post waits at most ``send_timeout_s``; then it is answered 503 with
  Retry-After.
* **A 503 means not written.** Before answering 503 the producer's unacknowledged
  batches are failed and its sender is cancelled (:func:`abort_pending`), so a
  record a client was told to retry cannot slip into the topic later when the
  broker returns; the retry (same deterministic event id) writes it once. The one
  case no client can rule out is a broker that appended a record and died before
  answering: the retry then carries the same id and decide skips it.
* **Recovery by itself.** The aborted producer is dropped and the next post builds
  a new one; while the broker is unreachable a failed connection attempt makes posts
  fail fast for ``reconnect_backoff_s`` instead of each trying again.
* **Backpressure.** Events waiting for an ack are counted across requests; past
  ``max_in_flight`` a post is answered 429 rather than queued in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.errors import TopicNotFoundError, UnavailableError
from streams.ingest.errors import Backpressure, BrokerUnavailable
from streams.kafka.catalogue import EVENT_TOPICS
from streams.kafka.compat import abort_producer
from streams.kafka.producer import EventProducer
from streams.settings import IngestSettings, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ready:
    """An event validated and encoded once, with where it goes: what the publisher sends."""

    event: dict[str, Any]
    topic: str  # catalogue name (events.<kind>); the producer adds the prefix
    key: bytes
    value: bytes | None  # None: not encoded, its id accepted before (Ingest.finish); never published so
    path: str = ""  # where the event was in its post, for an error about it

    @property
    def encoded(self) -> bytes:
        """The value to publish (a bug to publish one not encoded: :meth:`Ingest.accept` encodes what is new)."""
        if self.value is None:
            raise ValueError(f"event {self.event_id} was not encoded")
        return self.value

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])


class SendAborted(UnavailableError, KafkaError):  # type: ignore[misc]  # aiokafka ships no type information
    """Set on batches an ingest post gave up on; they will not be sent."""

    retriable = False


def abort_pending(producer: EventProducer, reason: str) -> None:
    """Fail every unacknowledged batch of ``producer`` and stop its sender, synchronously.

    aiokafka has no public "abort": ``stop()`` flushes, which is exactly wrong here
    (it would deliver records the clients were told had failed); see
    :func:`streams.kafka.compat.abort_producer`.
    """
    abort_producer(producer.kafka, SendAborted(reason))


class Publisher:
    def __init__(self, settings: Settings, ingest: IngestSettings) -> None:
        self.settings = settings
        self.ingest = ingest
        self._producer: EventProducer | None = None
        self._lock = asyncio.Lock()
        self._down_until = 0.0
        self._in_flight = 0
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def _unavailable(self, reason: str) -> BrokerUnavailable:
        return BrokerUnavailable(reason, self.ingest.retry_after_s)

    async def start(self) -> None:
        """Connect if the broker is there; a broker that is down is not fatal (posts get 503)."""
        try:
            await self._current()
        except BrokerUnavailable:
            log.warning("Kafka at %s is not reachable yet; posts get 503 until it is", self.settings.kafka_bootstrap)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._close_quietly(producer)
        if self._background:
            await asyncio.wait(self._background, timeout=self.ingest.send_timeout_s + 5)

    async def _current(self) -> EventProducer:
        producer = self._producer
        if producer is not None:
            return producer
        if time.monotonic() < self._down_until:
            raise self._unavailable("Kafka is unreachable; retry later")
        async with self._lock:
            if self._producer is not None:
                return self._producer
            if time.monotonic() < self._down_until:
                raise self._unavailable("Kafka is unreachable; retry later")
            producer = EventProducer(
                self.settings,
                request_timeout_ms=self.ingest.kafka_request_timeout_ms,
                retry_backoff_ms=250,
            )
            try:
                await asyncio.wait_for(producer.start(), self.ingest.send_timeout_s)
            except Exception as exc:  # connection refused, timeout, auth: all mean "not now"
                self._down_until = time.monotonic() + self.ingest.reconnect_backoff_s
                self._spawn(self._close_quietly(producer))
                log.warning("cannot connect to Kafka at %s: %s", self.settings.kafka_bootstrap, type(exc).__name__)
                raise self._unavailable("Kafka is unreachable; retry later") from None
            log.info("connected to Kafka at %s", self.settings.kafka_bootstrap)
            self._producer = producer
            return producer

    async def publish(self, events: Sequence[Ready]) -> None:
        """Write encoded events, pipelined; returns once Kafka acknowledged all of them.

        Raises Backpressure (429) or BrokerUnavailable (503); in both cases none of the
        events will be written by this call.
        """
        count = len(events)
        if self._in_flight + count > self.ingest.max_in_flight:
            raise Backpressure(
                f"{self._in_flight} events waiting for Kafka's acknowledgement + {count} in this post exceed the "
                f"limit of {self.ingest.max_in_flight}; retry later",
                self.ingest.backpressure_retry_after_s,
            )
        self._in_flight += count
        try:
            producer = await self._current()
            try:
                await asyncio.wait_for(self._send(producer, events), self.ingest.send_timeout_s)
            except asyncio.CancelledError:
                self._discard(producer, "post cancelled")
                raise
            except TopicNotFoundError as exc:  # nothing was sent; the producer is fine
                raise self._unavailable(f"{exc}; nothing was accepted") from None
            except Exception as exc:
                self._discard(producer, f"{type(exc).__name__} after up to {self.ingest.send_timeout_s:g}s")
                raise self._unavailable(
                    f"Kafka did not acknowledge within {self.ingest.send_timeout_s:g}s; nothing was accepted, retry later"
                ) from None
        finally:
            self._in_flight -= count

    @staticmethod
    async def _send(producer: EventProducer, events: Sequence[Ready]) -> None:
        # Encoded once by the view (to answer 400/413 before anything is sent), so the
        # bytes go as they are; gather pipelines them into the producer's batches.
        results = await asyncio.gather(
            *(producer.send_raw(ready.topic, ready.key, ready.encoded) for ready in events), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _discard(self, producer: EventProducer, reason: str) -> None:
        if self._producer is producer:
            self._producer = None
            log.warning("dropping the Kafka producer (%s); the next post reconnects", reason)
        abort_pending(producer, reason)
        self._spawn(self._close_quietly(producer))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_quietly(self, producer: EventProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self.ingest.send_timeout_s + 5)
        except Exception as exc:  # best effort: the producer is being thrown away
            log.debug("closing a dropped producer: %s", type(exc).__name__)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Broker reachable and the events.* topics present (what ingest writes to)."""
        wanted = [self.settings.topic_prefix + t for t in EVENT_TOPICS]
        timeout = self.ingest.kafka_request_timeout_ms / 1000
        admin = AIOKafkaAdminClient(
            **self.settings.kafka_client_config(), request_timeout_ms=self.ingest.kafka_request_timeout_ms
        )
        try:
            await asyncio.wait_for(admin.start(), timeout)
            existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
        except Exception as exc:
            return False, {"kafka": f"unreachable ({type(exc).__name__})", "in_flight": self._in_flight}
        finally:
            try:
                await admin.close()
            except Exception:  # never started
                pass
        missing = [t for t in wanted if t not in existing]
        detail: dict[str, Any] = {"kafka": "ok", "in_flight": self._in_flight}
        if missing:
            detail["missing_topics"] = missing
        return not missing, detail
