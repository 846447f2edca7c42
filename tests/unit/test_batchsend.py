"""Produce batches per partition, and table rows whose changelog records join them (issue 17).

A faust table's write sends its changelog record through faust's per-record path;
:class:`ChangelogRows` puts the row in the table's store and keeps the record, serialized as
faust serializes it, for :class:`ChangelogSends` to hand to aiokafka's ``send``. Checked here
on a real (unstarted) faust table against the record faust's own ``send_changelog`` would
send, with a fake producer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import faust

from streams.kafka.batchsend import ChangelogRows, ChangelogSends, PartitionBatcher
from streams.kafka.compat import changelog_record


class FakeProducer:
    """aiokafka's ``send`` as PartitionBatcher and ChangelogSends use it; acknowledges when told to."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None, partition: int | None) -> Any:
        self.sent.append((topic, key, value, partition))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(fut)
        return fut


def app_tables() -> tuple[faust.App, Any, Any]:
    app = faust.App("batchsend-test", broker="kafka://127.0.0.1:1", store="memory://", topic_partitions=4)
    sessions = app.Table("sessions", default=None, partitions=4)
    inhibitors = app.GlobalTable("inhibitors", default=None, partitions=1, use_partitioner=True)
    return app, sessions, inhibitors


def test_the_changelog_record_is_the_one_faust_sends():
    _, sessions, _ = app_tables()
    captured: dict[str, Any] = {}

    def send_soon(**kwargs: Any) -> Any:
        captured.update(kwargs)
        raise StopIteration  # stop faust's path once it has said what it would send

    sessions.changelog_topic.send_soon = send_soon
    state = {"v": 3, "seen": ["a"], "alerts": {"k": {"status": "firing"}}}
    try:
        sessions.send_changelog(2, "acme:db", state)
    except StopIteration:
        pass
    topic = sessions.changelog_topic
    want_key, _ = topic.prepare_key(captured["key"], captured["key_serializer"])
    want_value, _ = topic.prepare_value(captured["value"], captured["value_serializer"])
    name, key, value = changelog_record(sessions, "acme:db", state)
    assert (name, key, value) == (topic.get_topic_name(), want_key, want_value)
    assert json.loads(key) == "acme:db" and json.loads(value) == state
    assert changelog_record(sessions, "acme:db", None)[2] is None  # a delete is a tombstone


def test_rows_go_to_the_store_at_once_and_their_records_to_the_producer_in_order():
    _, sessions, inhibitors = app_tables()
    producer = FakeProducer()
    out, sends = PartitionBatcher(producer, {}), ChangelogSends()
    rows = ChangelogRows(sessions, sends, partition=3)
    rows["s1"] = b"\x00one"
    rows["s2"] = b"\x00two"
    del rows["s1"]
    ChangelogRows(inhibitors, sends)["s2"] = [{"alertname": "A"}]
    assert dict(sessions.data) == {"s2": b"\x00two"} and "s1" not in rows and rows.get("s1") is None
    assert inhibitors.data["s2"] == [{"alertname": "A"}] and not producer.sent

    async def run() -> None:
        await sends.send(out)
        assert len(producer.sent) == 4 and len(out.inflight) == 4
        flushing = asyncio.ensure_future(out.flush())  # the next flush waits for them
        await asyncio.sleep(0)
        assert not flushing.done()
        for fut in producer.acks:
            fut.set_result(None)
        await flushing
        assert not out.inflight

    asyncio.run(run())
    log = sessions.changelog_topic.get_topic_name()
    assert producer.sent[:3] == [
        (log, b'"s1"', b"\x00one", 3),
        (log, b'"s2"', b"\x00two", 3),
        (log, b'"s1"', None, 3),
    ]
    topic, key, value, partition = producer.sent[3]
    assert topic == inhibitors.changelog_topic.get_topic_name() and partition is None  # the partitioner's, as faust
    assert json.loads(value) == [{"alertname": "A"}]
