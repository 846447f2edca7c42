"""Events in, decisions and outbox effects out, through a real worker on the real broker.

One worker run covers: real catalogue alerts, a record written by an older schema
version (the worker reads it through schemas/history), and garbage bytes that must
land in events.dlq with the reason, origin and raw bytes while the records after
it on the same partition are still processed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path

import pytest

from classifier.dataset import load_rules, rule_to_event
from streams.kafka.codec import SCHEMAS_DIR, Codec
from streams.kafka.producer import EventProducer
from streams.kafka.reader import TopicReader
from streams.settings import Settings

pytestmark = pytest.mark.integration

OLD_DROPPED = ("session_rule", "org", "annotations")


def older_event_schema() -> dict:
    schema = json.loads((SCHEMAS_DIR / "opsloop.Event.avsc").read_text())
    older = copy.deepcopy(schema)
    older["fields"] = [f for f in older["fields"] if f["name"] not in OLD_DROPPED]
    return older


@pytest.fixture
def schemas_with_history(tmp_path: Path) -> Path:
    """A schemas/ dir whose history/ holds the older Event version, as a real upgrade would."""
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, target)
    (target / "history" / "opsloop.Event.v0.avsc").write_text(json.dumps(older_event_schema()))
    return target


def test_alerts_old_schema_and_garbage_through_a_real_worker(topics: Settings, worker_factory, schemas_with_history):
    settings = topics
    rules = [r for r in load_rules() if r.severity == "critical"][:8]
    events = [rule_to_event(r, occurred_at=1_700_000_000_000 + i) for i, r in enumerate(rules)]
    poison_key = events[2]["session_key"]
    old_writer = Codec()
    old_writer.register(older_event_schema())
    old_event = {
        k: v for k, v in rule_to_event(rules[0], occurred_at=1_700_000_100_000).items() if k not in OLD_DROPPED
    }
    old_event.update(event_id="old-schema-1", session_key=poison_key)  # same partition, after the poison
    garbage = b"\x00\x01 this is not avro \xff"

    async def produce() -> dict:
        async with EventProducer(settings) as producer:
            await producer.send_many(events[:3])
            poison_meta = await producer.send_raw("events.telemetry", poison_key.encode(), garbage)
            await producer.send_raw(
                "events.telemetry",
                poison_key.encode(),
                old_writer.encode("opsloop.Event", {**old_event, "received_at": 1}),
            )
            await producer.send_many(events[3:])
        return {"partition": poison_meta.partition, "offset": poison_meta.offset}

    poison = asyncio.run(produce())
    worker_factory(OPSLOOP_SCHEMAS_DIR=str(schemas_with_history))
    good_ids = {e["event_id"] for e in events} | {"old-schema-1"}
    # The first firing alert of each session is notified at once; the old-schema
    # record joins events[2]'s session, where grouping may fold it into that notice.
    first_of_session = {e["event_id"] for e in events}

    def missing(records) -> dict:
        decided = {r.value["event_id"] for r in records if r.topic == "decisions" and r.value}
        effected = {r.value["event_id"] for r in records if r.topic == "outbox" and r.value}
        dead = [r for r in records if r.topic == "events.dlq"]
        gaps = {"undecided": good_ids - decided, "no effect": first_of_session - effected, "no dead letter": not dead}
        return {k: v for k, v in gaps.items() if v}

    async def read():
        async with TopicReader(settings, ["outbox", "decisions", "events.dlq"]) as reader:
            seen: list = []

            def done(records: list) -> bool:
                seen[:] = records
                return not missing(records)

            try:
                return await reader.collect(done, timeout=90)
            except TimeoutError:
                raise AssertionError(f"after 90 s, {len(seen)} records read: {missing(seen)}") from None

    records = asyncio.run(read())
    decisions = [r.value for r in records if r.topic == "decisions"]
    effects = [r.value for r in records if r.topic == "outbox"]
    dead = [r.value for r in records if r.topic == "events.dlq"]

    # One decision per good event; each session's firing alert produced a notification.
    assert sorted(d["event_id"] for d in decisions) == sorted(good_ids)
    notified = {e["event_id"] for e in effects if e["type"] == "notify"}
    assert first_of_session <= notified
    assert {e["event_id"] for e in effects} <= good_ids
    assert all(e["notify"]["title"] for e in effects if e["type"] == "notify")
    old = next(d for d in decisions if d["event_id"] == "old-schema-1")
    assert old["org"] == "default"  # the field the old writer lacked took its default

    # The garbage is kept whole, with why and where it came from.
    assert len(dead) == 1
    letter = dead[0]
    assert letter["value"] == garbage and letter["key"] == poison_key.encode()
    assert letter["source_topic"] == settings.topic_prefix + "events.telemetry"
    assert (letter["partition"], letter["offset"]) == (poison["partition"], poison["offset"])
    assert letter["error_type"] == "BadHeaderError" and "not an Avro single-object record" in letter["reason"]
    assert letter["stage"] == "decide"
