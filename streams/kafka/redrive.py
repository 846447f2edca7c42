"""Dead-letter redrive: after a fix, a dead-lettered event or effect re-enters through the normal path, once.

A dead letter keeps its record whole (key and bytes, ``streams.kafka.deadletter``), so
redriving is producing those bytes again, with the same key, to the topic they came
from: ``events.*`` for ``events.dlq``, ``outbox`` for ``outbox.dlq``. The decide agent
and the sinks then treat it as any record.

Once: each redrive is recorded on the compacted topic ``dlq.redriven``, keyed by the
dead letter's source (``topic:partition:offset``), and a source already there is not
redriven again (two dead letters of one source record, e.g. a sink that re-read it
after a crash, redrive once). The mark is written after the record, so a crash
between the two can produce a record twice; both copies carry the header
``opsloop-redrive`` with that same key, and that is harmless: decide skips event ids a
session has seen, and the delivery ledger re-opens a ``dead`` row for a given redrive
key once (a second copy finds the row delivered, or re-opened by that key, and is
skipped).

A notification that says an incident fires (a notify effect, action ``trigger``) is not redriven once a later
effect of the same session on ``outbox`` resolved it: a fault probe redrove rate-limited notices ten minutes
late and Slack got "firing" after "resolved" (PagerDuty would re-open the incident). The later effects share
the dead letter's partition (the session is the key), so only that partition, from the letter's offset on,
is read. ``include_superseded`` redrives them all the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import InvalidInputError
from streams.kafka.codec import Codec, CodecError, default_codec
from streams.kafka.producer import EventProducer, now_ms
from streams.kafka.reader import TopicReader
from streams.settings import Settings

EVENT_TOPICS = ("events.telemetry", "events.webhook", "events.timer", "events.scan")
SOURCES = {"events.dlq": EVENT_TOPICS, "outbox.dlq": ("outbox",)}
MARKS = "dlq.redriven"
HEADER = "opsloop-redrive"


class RedriveError(InvalidInputError):
    """A dead letter cannot be redriven (its source is not a topic its dead-letter topic takes from)."""


@dataclass(frozen=True)
class Letter:
    """One dead letter and where it is."""

    dlq: str
    partition: int
    offset: int
    record: dict[str, Any]
    source: str  # the source topic's catalogue name (prefix removed)

    @property
    def mark(self) -> str:
        """What identifies the record it holds: its source topic, partition and offset."""
        return f"{self.source}:{self.record['partition']}:{self.record['offset']}"


def _logical(settings: Settings, topic: str) -> str:
    prefix = settings.topic_prefix
    return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic


async def read(settings: Settings, dlqs: Iterable[str]) -> tuple[list[Letter], set[str]]:
    """The dead letters of ``dlqs`` and the marks of everything already redriven (both read to their end)."""
    dlqs = list(dlqs)
    async with TopicReader(settings, [*dlqs, MARKS]) as reader:
        records = await reader.read_to_end()
    letters, marks = [], set()
    for rec in records:
        if rec.topic == MARKS:
            if rec.key is not None:
                marks.add(rec.key.decode())
        elif rec.value is not None:
            source = _logical(settings, str(rec.value["source_topic"]))
            letters.append(Letter(rec.topic, rec.partition, rec.offset, rec.value, source))
    letters.sort(key=lambda x: (x.dlq, x.record["failed_at"], x.partition, x.offset))
    return letters, marks


def select(
    letters: Iterable[Letter],
    *,
    reason: str | None = None,
    offset: int | None = None,
    partition: int | None = None,
    mark: str | None = None,
) -> list[Letter]:
    """Dead letters whose reason contains ``reason`` (case-insensitive) / whose source offset (and partition) match /
    that hold the source record ``mark`` (``topic:partition:offset``, what the console's buttons name)."""
    out = []
    for letter in letters:
        if mark is not None and letter.mark != mark:
            continue
        if reason is not None and reason.lower() not in str(letter.record["reason"]).lower():
            continue
        if offset is not None and letter.record["offset"] != offset:
            continue
        if partition is not None and letter.record["partition"] != partition:
            continue
        out.append(letter)
    return out


def trigger_of(value: bytes | None, codec: Codec) -> dict[str, Any] | None:
    """The effect a dead letter holds when it is a notification that an incident fires (else None)."""
    if not value:
        return None
    try:
        effect = codec.decode(value, expect="opsloop.Effect")
    except CodecError:
        return None
    notify = effect.get("notify") or {}
    return effect if effect.get("type") == "notify" and notify.get("action") == "trigger" else None


async def superseded_by(settings: Settings, letter: Letter, codec: Codec, consumer: AIOKafkaConsumer) -> str | None:
    """Where the outbox resolved the session of ``letter``'s trigger after it (``outbox[p]@o``), or None; read with
    ``consumer`` (started, in no group)."""
    trigger = trigger_of(letter.record.get("value"), codec)
    if trigger is None or letter.source != "outbox":
        return None
    tp = TopicPartition(settings.topic_prefix + "outbox", int(letter.record["partition"]))
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    consumer.seek(tp, int(letter.record["offset"]) + 1)
    while await consumer.position(tp) < end:
        for msg in (await consumer.getmany(tp, timeout_ms=500, max_records=1000)).get(tp, []):
            if msg.offset >= end or not msg.value:
                continue
            try:
                effect = codec.decode(msg.value, expect="opsloop.Effect")
            except CodecError:
                continue
            notify = effect.get("notify") or {}
            if effect.get("session_key") == trigger["session_key"] and notify.get("action") == "resolve":
                return f"outbox[{msg.partition}]@{msg.offset}"
    return None


async def redrive(
    settings: Settings, letters: Iterable[Letter], marks: set[str], *, include_superseded: bool = False
) -> list[tuple[Letter, str]]:
    """Produce each letter's record to its source topic, at most once per source record; (letter, what happened)."""
    codec = default_codec()
    reader = AIOKafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False, group_id=None)
    await reader.start()
    try:
        async with EventProducer(settings) as producer:
            return [
                (letter, await _redrive_one(settings, letter, marks, producer, reader, codec, include_superseded))
                for letter in letters
            ]
    finally:
        await reader.stop()


async def _redrive_one(
    settings: Settings,
    letter: Letter,
    marks: set[str],
    producer: EventProducer,
    reader: AIOKafkaConsumer,
    codec: Codec,
    include_superseded: bool,
) -> str:
    """Redrive ``letter`` unless it was already or its incident resolved since; what happened."""
    if letter.mark in marks:
        return "already redriven"
    if not include_superseded and (where := await superseded_by(settings, letter, codec, reader)) is not None:
        return f"not redriven: the incident resolved since ({where}); --include-superseded"
    if letter.source not in SOURCES.get(letter.dlq, ()):
        raise RedriveError(
            f"{letter.dlq}[{letter.partition}]@{letter.offset}: source topic {letter.source!r} is not one "
            f"{letter.dlq} redrives to ({', '.join(SOURCES.get(letter.dlq, ()))})"
        )
    value = letter.record["value"]
    if not value:
        return "no record kept"
    meta = await producer.send_raw(letter.source, letter.record["key"], value, headers=[(HEADER, letter.mark.encode())])
    await producer.send_record(MARKS, letter.mark, "opsloop.DeadLetter", {**letter.record, "failed_at": now_ms()})
    marks.add(letter.mark)
    return f"redriven to {letter.source}[{meta.partition}]@{meta.offset}"
