"""The topic catalogue: topics.yaml parsed, validated, and compared with a cluster.

``load_catalogue`` is pure (file in, :class:`TopicSpec` list out, or a
:class:`~streams.model.yamlfile.ConfigError` naming topic, field and line). ``plan`` is
pure too: it compares the catalogue with what a cluster reports and says what to
create and what differs. ``streams.kafka.admin`` is the thin I/O shell that asks
the cluster and creates topics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.kafka.codec import Codec, default_codec
from streams.model.records import EVENT_KINDS as EVENT_KINDS  # re-exported: the event topics are catalogue topics too
from streams.model.records import EVENT_TOPICS as EVENT_TOPICS
from streams.model.yamlfile import ConfigError, LineDict, check_keys, load_yaml, parse_duration_ms
from streams.settings import ROOT

TOPICS_FILE = ROOT / "topics.yaml"


CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
KEYS = ("session_key", "effect_id", "source_key", "org", "source_position")  # source_position: topic:partition:offset
TOPIC_FIELDS = (
    "description",
    "partitions",
    "replication",
    "min_insync_replicas",
    "retention",
    "cleanup_policy",
    "key",
    "value_schema",
    "configs",
)
DEFAULT_FIELDS = ("partitions", "replication", "min_insync_replicas")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    retention_ms: int  # -1: keep forever
    cleanup_policy: str
    key: str
    value_schema: str
    min_insync_replicas: int = 1
    description: str = ""
    configs: Mapping[str, str] = field(default_factory=dict)

    def kafka_configs(self, replication: int | None = None) -> dict[str, str]:
        """Topic-level Kafka configs; min.insync.replicas never exceeds the replication used."""
        rf = replication if replication is not None else self.replication
        out = {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(min(self.min_insync_replicas, rf)),
        }
        out.update({k: str(v) for k, v in self.configs.items()})
        return out


def _positive_int(path: Path, where: LineDict, key: str, what: str) -> int:
    value = where[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(path, where.line_of(key), f"{what}: {key} must be a positive integer, got {value!r}")
    return value


def load_catalogue(path: str | Path = TOPICS_FILE, codec: Codec | None = None) -> list[TopicSpec]:
    """Parse and validate topics.yaml; every error names the topic, the field and the line."""
    path = Path(path)
    codec = codec or default_codec()
    doc = load_yaml(path)
    if not isinstance(doc, LineDict):
        raise ConfigError(path, None, "expected a mapping with 'topics:'")
    check_keys(path, doc, ("defaults", "topics"), "top level")
    defaults = doc.get("defaults") or LineDict()
    if not isinstance(defaults, LineDict):
        raise ConfigError(path, doc.line_of("defaults"), "defaults: expected a mapping")
    check_keys(path, defaults, DEFAULT_FIELDS, "defaults")
    for key in defaults:
        _positive_int(path, defaults, key, "defaults")
    topics = doc.get("topics")
    if not isinstance(topics, LineDict) or not topics:
        raise ConfigError(path, doc.line_of("topics"), "topics: expected a non-empty mapping of topic name to settings")

    specs: list[TopicSpec] = []
    for name, body in topics.items():
        what = f"topic {name!r}"
        line = topics.line_of(name)
        if not isinstance(body, LineDict):
            raise ConfigError(path, line, f"{what}: expected a mapping of settings")
        check_keys(path, body, TOPIC_FIELDS, what)
        merged = LineDict({**defaults, **body})
        merged.line, merged.key_lines = body.line, {**defaults.key_lines, **body.key_lines}
        for required in ("partitions", "replication", "retention", "cleanup_policy", "key", "value_schema"):
            if required not in merged:
                raise ConfigError(path, line, f"{what}: missing field {required!r}")
        partitions = _positive_int(path, merged, "partitions", what)
        replication = _positive_int(path, merged, "replication", what)
        min_isr = _positive_int(path, merged, "min_insync_replicas", what) if "min_insync_replicas" in merged else 1
        retention = merged["retention"]
        if retention in ("forever", "infinite", -1):
            retention_ms = -1
        else:
            try:
                retention_ms = parse_duration_ms(retention)
            except ValueError as exc:
                raise ConfigError(path, merged.line_of("retention"), f"{what}: retention: {exc}") from None
        policy = merged["cleanup_policy"]
        if policy not in CLEANUP_POLICIES:
            raise ConfigError(
                path,
                merged.line_of("cleanup_policy"),
                f"{what}: cleanup_policy must be one of {', '.join(CLEANUP_POLICIES)}, got {policy!r}",
            )
        key = merged["key"]
        if key not in KEYS:
            raise ConfigError(path, merged.line_of("key"), f"{what}: key must be one of {', '.join(KEYS)}, got {key!r}")
        schema = merged["value_schema"]
        if schema not in codec.names:
            from streams.model.yamlfile import suggest

            raise ConfigError(
                path,
                merged.line_of("value_schema"),
                f"{what}: value_schema {schema!r} is not a schema in schemas/{suggest(str(schema), codec.names)}",
            )
        configs = merged.get("configs") or {}
        if not isinstance(configs, dict):
            raise ConfigError(
                path, merged.line_of("configs"), f"{what}: configs must be a mapping of Kafka topic configs"
            )
        specs.append(
            TopicSpec(
                name=str(name),
                partitions=partitions,
                replication=replication,
                retention_ms=retention_ms,
                cleanup_policy=policy,
                key=key,
                value_schema=schema,
                min_insync_replicas=min_isr,
                description=str(merged.get("description", "")),
                configs={str(k): str(v) for k, v in configs.items()},
            )
        )
    names = {s.name for s in specs}
    missing = [
        t for t in (*EVENT_TOPICS, "decisions", "outbox", "deliveries", "events.dlq", "outbox.dlq") if t not in names
    ]
    if missing:
        raise ConfigError(path, doc.line_of("topics"), f"topics: opsloop needs {', '.join(missing)}")
    event_partitions = {s.partitions for s in specs if s.name in (*EVENT_TOPICS, "decisions", "outbox")}
    if len(event_partitions) > 1:
        raise ConfigError(
            path,
            doc.line_of("topics"),
            "events.*, decisions and outbox must have the same partition count (they are co-partitioned by session key)",
        )
    return specs


def by_name(specs: Iterable[TopicSpec]) -> dict[str, TopicSpec]:
    return {s.name: s for s in specs}


def value_schemas(path: str | Path = TOPICS_FILE) -> dict[str, str]:
    """Each topic's value schema as topics.yaml declares it, for readers to decode with ``expect``.

    A reader that decoded whatever schema a record named took a well-formed record of another
    type (a decision written to an events topic) for its own and failed on the fields it lacked.
    """
    return {s.name: s.value_schema for s in load_catalogue(path)}


# -- comparing with a cluster ---------------------------------------------------


@dataclass(frozen=True)
class ObservedTopic:
    """What a cluster reports about one topic."""

    name: str
    partitions: int
    replication: int
    configs: Mapping[str, str]


@dataclass(frozen=True)
class Plan:
    create: list[TopicSpec]
    matching: list[str]
    drift: dict[str, list[str]]  # topic -> human-readable differences
    replication: int  # the replication factor that will be used
    notes: list[str]

    @property
    def changes(self) -> bool:
        return bool(self.create)


def plan(specs: Iterable[TopicSpec], observed: Mapping[str, ObservedTopic], brokers: int) -> Plan:
    """Decide what ``topics apply`` does: create the missing, report (never alter) the different."""
    specs = list(specs)
    wanted_rf = max((s.replication for s in specs), default=1)
    notes: list[str] = []
    if brokers < wanted_rf:
        notes.append(f"replication capped to {brokers}: the cluster has {brokers} broker(s)")
    create, matching, drift = [], [], {}
    for spec in specs:
        rf = min(spec.replication, brokers)
        have = observed.get(spec.name)
        if have is None:
            create.append(spec)
            continue
        diffs = []
        if have.partitions != spec.partitions:
            diffs.append(f"partitions {have.partitions} (topics.yaml says {spec.partitions})")
        if have.replication != rf:
            diffs.append(f"replication {have.replication} (topics.yaml says {rf})")
        for key, value in spec.kafka_configs(rf).items():
            actual = have.configs.get(key)
            if actual is not None and actual != value:
                diffs.append(f"{key} {actual} (topics.yaml says {value})")
        if diffs:
            drift[spec.name] = diffs
        else:
            matching.append(spec.name)
    return Plan(create=create, matching=matching, drift=drift, replication=min(wanted_rf, brokers), notes=notes)
