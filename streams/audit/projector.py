"""``opsloop projector``: folds the topics into the audit tables, restart-safe.

A plain aiokafka consumer rather than a faust agent, because the consumed position
must live in the SQL transaction that writes the rows (eventsourcing's rule), not
in Kafka's group offsets: on every assignment the projector seeks to the offsets
stored in ``projector_offsets``. A crash between a SQL commit and anything else
therefore neither loses nor doubles a row. Instances share partitions through an
ordinary consumer group; Kafka offsets are committed too, only so lag is visible.

With ``--metrics-port`` it serves its Prometheus metrics (the records it dead-letters,
``opsloop_dead_letters_total{stage="projector"}``) on ``/metrics``, from prometheus-client's own
server thread, so a scrape is answered while a batch waits on the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streams import metrics
from streams.audit.store import PROJECTED_TOPICS, Position, advance_offsets, stored_offsets, write_batch
from streams.db import while_database_down
from streams.kafka.catalogue import value_schemas
from streams.kafka.codec import CodecError, default_codec
from streams.kafka.deadletter import dead_letter
from streams.kafka.producer import EventProducer
from streams.model.records import EVENT_TOPICS, InvalidEventError, check_read_event
from streams.settings import Settings

log = logging.getLogger(__name__)


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type information
    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        stored = await while_database_down(stored_offsets, self.projector.engine, what="the audit database") or {}
        consumer = self.projector.consumer
        fresh = []
        for tp in assigned:
            offset = stored.get((self.projector.logical(tp.topic), tp.partition))
            if offset is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, offset)
        if fresh:
            await consumer.seek_to_beginning(*fresh)


class Projector:
    def __init__(self, settings: Settings, engine: sa.Engine, *, batch_max: int = 1000) -> None:
        self.settings = settings
        self.engine = engine
        self.batch_max = batch_max
        self._stop: asyncio.Event | None = None
        self.codec = default_codec()
        self.schemas = value_schemas(settings.topics_file)
        self.consumer = AIOKafkaConsumer(
            **settings.kafka_client_config(),
            group_id=f"{settings.app_id}-projector",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
        )

    def logical(self, physical: str) -> str:
        prefix = self.settings.topic_prefix
        return physical[len(prefix) :] if prefix and physical.startswith(prefix) else physical

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.consumer.subscribe(
            [self.settings.topic_prefix + t for t in PROJECTED_TOPICS], listener=_SeekToStored(self)
        )
        await self.consumer.start()
        try:
            async with EventProducer(self.settings) as dlq:
                while not stop.is_set():
                    batch = await self.consumer.getmany(timeout_ms=500, max_records=self.batch_max)
                    if batch:
                        await self._project(batch, dlq)
        finally:
            await self.consumer.stop()

    async def _project(self, batch: dict[TopicPartition, list[Any]], dlq: EventProducer) -> None:
        items, skipped = [], {}
        for tp, messages in batch.items():
            topic = self.logical(tp.topic)
            for msg in messages:
                try:
                    value = self.codec.decode(msg.value, expect=self.schemas.get(topic))
                    if topic in EVENT_TOPICS:
                        check_read_event(msg.key, value)  # what decide dead-letters (and no page could show)
                    items.append((Position(topic, msg.partition, msg.offset), value))
                except (CodecError, InvalidEventError) as exc:
                    # Kept whole in events.dlq with the reason; the audit moves on past it.
                    record = dead_letter(
                        reason=str(exc),
                        error=exc,
                        topic=tp.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        key=msg.key,
                        value=msg.value,
                        failed_at=int(time.time() * 1000),
                        stage="projector",
                    )
                    await dlq.send_record("events.dlq", msg.key, "opsloop.DeadLetter", record)
                    metrics.observe_dead_letter("events.dlq", "projector")
                    skipped[(topic, msg.partition)] = msg.offset + 1
        if (
            items
            and await while_database_down(write_batch, self.engine, items, stop=self._stop, what="the audit database")
            is None
        ):
            return  # stopped during an outage: nothing written, nothing committed; SQL offsets stand
        if skipped:
            await while_database_down(advance_offsets, self.engine, skipped, stop=self._stop, what="the audit database")
        # Kafka's offsets only mirror SQL's (for lag tooling); SQL is what we resume from,
        # so a commit refused during a rebalance loses nothing.
        try:
            await self.consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in batch.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            log.info("kafka offset mirror not committed (%s); SQL offsets stand", type(exc).__name__)


def run_projector(settings: Settings, batch_max: int = 1000, metrics_at: tuple[str, int] | None = None) -> int:
    """Project until SIGTERM or SIGINT; ``metrics_at`` (host, port): serve ``/metrics`` there."""
    import signal

    from prometheus_client import start_http_server

    from streams.audit.store import migrate
    from streams.db import make_engine
    from streams.errors import cannot_listen
    from streams.logs import configure, register_secrets

    configure(settings.log_level, settings.log_format)
    register_secrets(*settings.secret_values())
    engine = make_engine(settings.database_url.get_secret_value())
    server = None
    if metrics_at is not None:
        host, port = metrics_at
        try:
            server, _ = start_http_server(port, addr=host)
        except OSError as exc:
            raise cannot_listen(host, port, exc) from None
        log.info("projector metrics on http://%s:%d/metrics", host, server.server_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # a database still starting (or down) is waited for, as it is mid-run; SIGTERM ends the wait
        await while_database_down(migrate, engine, stop=stop, what="the audit database")
        if stop.is_set():
            return
        await Projector(settings, engine, batch_max=batch_max).run(stop)

    try:
        asyncio.run(main())
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0
