"""topics.yaml: validation that names topic, field and line; the apply plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.kafka.catalogue import TOPICS_FILE, ObservedTopic, load_catalogue, plan
from streams.model.yamlfile import ConfigError


def test_the_shipped_catalogue_is_valid_and_complete():
    specs = {s.name: s for s in load_catalogue()}
    assert set(specs) == {
        "events.telemetry",
        "events.webhook",
        "events.timer",
        "events.scan",
        "decisions",
        "outbox",
        "deliveries",
        "events.dlq",
        "outbox.dlq",
        "digest.counts",
        "dlq.redriven",
    }
    assert specs["dlq.redriven"].cleanup_policy == "compact"
    assert specs["outbox"].value_schema == "opsloop.Effect"
    assert specs["events.scan"].retention_ms == 30 * 86_400_000
    assert len({specs[n].partitions for n in ("events.telemetry", "events.timer", "outbox", "decisions")}) == 1


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = TOPICS_FILE.read_text()
    assert old in text
    path = tmp_path / "topics.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_a_typo_in_a_field_names_topic_field_line_and_suggestion(tmp_path):
    path = _broken(
        tmp_path, "  events.webhook:\n    description", "  events.webhook:\n    partitons: 6\n    description"
    )
    with pytest.raises(ConfigError) as err:
        load_catalogue(path)
    line = _line_of(path, "partitons")
    assert (
        str(err.value)
        == f"{path}:{line}: topic 'events.webhook': unknown field 'partitons' (did you mean 'partitions'?)"
    )


def test_an_unknown_schema_names_topic_and_field(tmp_path):
    path = _broken(tmp_path, "value_schema: opsloop.Effect", "value_schema: opsloop.Efect")
    with pytest.raises(
        ConfigError,
        match=r"topic 'outbox': value_schema 'opsloop.Efect' is not a schema in schemas/ \(did you mean 'opsloop.Effect'\?\)",
    ) as err:
        load_catalogue(path)
    assert err.value.line == _line_of(path, "opsloop.Efect")


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("retention: 7d", "retention: 7 days", "topic 'outbox': retention: not a duration"),
        (
            "cleanup_policy: delete\n    key: effect_id",
            "cleanup_policy: compacted\n    key: effect_id",
            "topic 'deliveries': cleanup_policy must be one of",
        ),
        (
            "partitions: 3\n    retention: 30d\n    cleanup_policy: delete\n    key: source_key\n    value_schema: opsloop.DeadLetter\n  outbox.dlq",
            "partitions: 0\n    retention: 30d\n    cleanup_policy: delete\n    key: source_key\n    value_schema: opsloop.DeadLetter\n  outbox.dlq",
            "topic 'events.dlq': partitions must be a positive integer",
        ),
        (
            "key: session_key\n    value_schema: opsloop.Decision",
            "key: sesion_key\n    value_schema: opsloop.Decision",
            "topic 'decisions': key must be one of",
        ),
        ("  events.timer:", "  events.timers:", "topics: opsloop needs events.timer"),
    ],
)
def test_invalid_values_are_rejected_with_the_topic_named(tmp_path, old, new, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_catalogue(_broken(tmp_path, old, new))


def test_yaml_syntax_error_has_a_line(tmp_path):
    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  outbox: {partitions: 3\n")
    with pytest.raises(ConfigError) as err:
        load_catalogue(path)
    assert err.value.line is not None and "invalid YAML" in str(err.value)


def test_a_file_without_defaults_or_with_a_control_character_names_its_line(tmp_path):
    """Found from outside (a hand-written topics.yaml, then YAML mutations): a file with no ``defaults:``
    stopped ``opsloop topics check`` with AttributeError, and a control character with PyYAML's ReaderError."""
    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  events.telemetry:\n    partitions: -3\n")
    with pytest.raises(ConfigError) as err:
        load_catalogue(path)
    assert str(err.value) == f"{path}:2: topic 'events.telemetry': missing field 'replication'"
    path.write_text('topics:\n  outbox:\n    description: "a\x01b"\n')
    with pytest.raises(ConfigError) as err:
        load_catalogue(path)
    assert str(err.value) == f"{path}:3: invalid YAML: control character U+0001 is not allowed"


def _observed(spec, **changes):
    base = dict(name=spec.name, partitions=spec.partitions, replication=1, configs=spec.kafka_configs(1))
    base.update(changes)
    return ObservedTopic(**base)


def test_plan_creates_missing_and_caps_replication_to_the_cluster():
    specs = load_catalogue()
    result = plan(specs, {}, brokers=1)
    assert [s.name for s in result.create] == [s.name for s in specs]
    assert result.replication == 1
    assert result.notes == ["replication capped to 1: the cluster has 1 broker(s)"]


def test_plan_on_a_matching_cluster_changes_nothing():
    specs = load_catalogue()
    result = plan(specs, {s.name: _observed(s) for s in specs}, brokers=1)
    assert not result.create and not result.drift and not result.changes
    assert len(result.matching) == len(specs)


def test_plan_reports_drift_without_changing_it():
    specs = load_catalogue()
    observed = {s.name: _observed(s) for s in specs}
    outbox = next(s for s in specs if s.name == "outbox")
    observed["outbox"] = _observed(outbox, partitions=3, configs={**outbox.kafka_configs(1), "retention.ms": "1000"})
    result = plan(specs, observed, brokers=1)
    assert not result.create
    assert result.drift == {
        "outbox": [
            f"partitions 3 (topics.yaml says {outbox.partitions})",
            f"retention.ms 1000 (topics.yaml says {outbox.retention_ms})",
        ]
    }


class _Admin:
    """describe_topics as aiokafka's admin answers it: a partition without a leader says -1."""

    def __init__(self, leaders_after: int) -> None:
        self.calls, self.leaders_after = 0, leaders_after

    async def describe_topics(self, names):
        self.calls += 1
        leader = 1 if self.calls > self.leaders_after else -1
        return [
            {
                "topic": n,
                "error_code": 0,
                "partitions": [{"error_code": 0, "partition": p, "leader": leader} for p in range(3)],
            }
            for n in names
        ]


def test_wait_for_leaders_asks_again_until_every_partition_has_one_and_gives_up_at_its_deadline():
    import asyncio

    from streams.kafka.admin import wait_for_leaders

    led = _Admin(leaders_after=2)
    assert asyncio.run(wait_for_leaders(led, ["a", "b"], timeout=5)) is True
    assert led.calls == 3
    never = _Admin(leaders_after=10**6)
    assert asyncio.run(wait_for_leaders(never, ["a"], timeout=0.2)) is False
    assert asyncio.run(wait_for_leaders(_Admin(0), [], timeout=0.2)) is True
