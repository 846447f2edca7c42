"""The faust app and its topics, built from settings by a factory (nothing is read at import time).

``create_app`` wires the topics of topics.yaml as raw bytes in and out (the Avro codec
decodes, so a record that does not decode can be dead-lettered with its bytes instead
of crashing faust's deserializer). It registers no agent and declares no table: the
worker (``agents.worker``) builds the runtime the agents share around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import faust

from streams.kafka.catalogue import EVENT_TOPICS, TopicSpec, by_name, load_catalogue
from streams.kafka.codec import Codec, default_codec
from streams.settings import Settings

PRODUCER_LINGER_S = 0.005
PRODUCER_MAX_BATCH_BYTES = 256 * 1024


@dataclass
class KafkaApp:
    """A faust app with the catalogue's topics, the codec and the settings it was built from."""

    app: faust.App
    settings: Settings
    codec: Codec
    specs: dict[str, TopicSpec]
    topics: dict[str, faust.TopicT] = field(default_factory=dict)

    def topic(self, name: str) -> faust.TopicT:
        return self.topics[name]

    def physical(self, name: str) -> str:
        """The topic's name on the cluster (with the prefix)."""
        return self.settings.topic_prefix + name


def faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def create_app(settings: Settings, *, replication: int | None = None) -> KafkaApp:
    """Build the faust app. ``replication`` is what the cluster can hold (from ``topics apply``);
    faust's own topics (changelogs, assignor) use it."""
    codec = (
        default_codec()
        if settings.schemas_dir.resolve() == default_codec_dir()
        else Codec().load_dir(settings.schemas_dir)
    )
    specs = by_name(load_catalogue(settings.topics_file, codec))
    partitions = specs[EVENT_TOPICS[0]].partitions
    app = faust.App(
        settings.app_id,
        broker=faust_broker_url(settings.kafka_bootstrap),
        broker_credentials=settings.faust_broker_credentials(),
        broker_client_id=settings.kafka_client_id,
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=partitions,
        topic_replication_factor=replication or min(s.replication for s in specs.values()),
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # faust's defaults (no linger, 16 KB batches) send a produce request per few records: a
        # session's state is ~4 KB of JSON on its changelog, so a batch held about four. 5 ms and
        # 256 KB (EventProducer's linger, the bench passthrough's batch size) cut the worker's CPU per
        # event by a fifth and the broker's by ~40 % (deploy/bench/BENCHMARKS.md, "Worker profile").
        producer_linger=PRODUCER_LINGER_S,
        producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_commit_interval=settings.commit_interval_s,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
    )
    kafka = KafkaApp(app=app, settings=settings, codec=codec, specs=specs)
    for name, spec in specs.items():
        kafka.topics[name] = app.topic(
            settings.topic_prefix + name,
            partitions=spec.partitions,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            internal=False,
        )
    kafka.topics["events"] = app.topic(
        *(settings.topic_prefix + t for t in EVENT_TOPICS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    return kafka


def default_codec_dir() -> Path:
    from streams.kafka.codec import SCHEMAS_DIR

    return SCHEMAS_DIR.resolve()
