"""The decide agent: the thin shell around :func:`streams.decide.decide`.

Per micro-batch from the events.* topics: decode every record (a record that does
not decode goes to events.dlq with its reason, origin and bytes, and the batch goes
on), classify the batch in one call, then for each event in order read the session's
state from the table, call decide, write the state back, and send the effects to
outbox and the record to decisions. Nothing else lives here.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import faust

from streams.app import Opsloop
from streams.codec import CodecError
from streams.deadletter import dead_letter
from streams.decide import Context, Verdict, decide
from streams.producer import now_ms

log = logging.getLogger(__name__)

Classify = Callable[[Sequence[dict[str, Any]]], list[Verdict]]

_SEVERITY_FROM_LABEL = {"critical": "urgent", "page": "urgent", "error": "action", "warning": "warning", "info": "info"}


def label_verdicts(events: Sequence[dict[str, Any]]) -> list[Verdict]:
    """Stand-in classification from the alert's own severity label."""
    return [
        Verdict(severity=_SEVERITY_FROM_LABEL.get(e["labels"].get("severity", ""), "warning"), classifier="labels-0")
        for e in events
    ]


def set_current_event(stream: faust.StreamT, event: faust.EventT) -> None:
    """Point faust's current event at ``event`` while a batch is folded.

    A faust table picks the changelog partition (and store partition) of a write
    from the stream's current event; inside a take_events() batch that is the last
    event taken, which may belong to another partition. Setting it per event keeps
    each session's state on its own partition. (faust has no public API for this.)
    """
    stream._set_current_event(event)  # noqa: SLF001


def register(ops: Opsloop, classify: Classify = label_verdicts) -> faust.types.AgentT:
    app, codec, settings = ops.app, ops.codec, ops.settings
    outbox, decisions, dlq = ops.topic("outbox"), ops.topic("decisions"), ops.topic("events.dlq")
    # JSON state keyed by the session key (str); the changelog partition follows the
    # source event's partition (see set_current_event), so it is co-partitioned.
    sessions = app.Table("sessions", default=None, partitions=ops.specs["events.telemetry"].partitions)
    ops.tables["sessions"] = sessions

    async def dead_letter_event(message: Any, exc: Exception) -> None:
        record = dead_letter(
            reason=str(exc), error=exc, topic=message.topic, partition=message.partition,
            offset=message.offset, key=message.key, value=message.value, failed_at=now_ms(), stage="decide",
        )
        await dlq.send(key=message.key, value=codec.encode("opsloop.DeadLetter", record))
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)

    @app.agent(ops.topic("events"), name="decide")
    async def decide_agent(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.decide_batch_max, within=settings.decide_batch_within_s):
            good: list[tuple[faust.EventT, dict[str, Any]]] = []
            for ev in batch:
                try:
                    good.append((ev, codec.decode(ev.message.value, expect="opsloop.Event")))
                except CodecError as exc:
                    await dead_letter_event(ev.message, exc)
            if not good:
                continue
            verdicts = classify([event for _, event in good])
            for (ev, event), verdict in zip(good, verdicts):
                set_current_event(stream, ev)
                key, session = ev.message.key, event["session_key"]
                try:
                    result = decide(sessions.get(session), event, Context(verdict=verdict))
                except Exception as exc:  # a bug or an event decide cannot fold: keep it, keep going
                    log.exception("decide failed for %s", event.get("event_id"))
                    await dead_letter_event(ev.message, exc)
                    continue
                sessions[session] = result.state
                for effect in result.effects:
                    await outbox.send(key=key, value=codec.encode("opsloop.Effect", effect))
                await decisions.send(key=key, value=codec.encode("opsloop.Decision", result.record))

    return decide_agent
