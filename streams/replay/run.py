"""``opsloop replay``: read the recorded topics and re-run decide, never writing anything.

The I/O shell around :mod:`streams.replay.compare`: one group-less consumer reads
the four events.* topics and ``decisions`` from their earliest retained offsets up
to the end offsets taken when the replay starts (a progress bar on stderr), the
window [since, until] is located with ``offsets_for_times``, and the fold runs in
this process. Nothing is produced, no offset is committed, no receiver is called.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.core.decide import DECIDE_VERSION, Verdict, configured_context
from streams.errors import EXIT_DIFFERS, InvalidInputError
from streams.kafka.catalogue import EVENT_TOPICS, value_schemas
from streams.kafka.codec import Codec, CodecError, default_codec
from streams.kafka.compat import refresh_metadata
from streams.model.receivers import ChannelSpec
from streams.model.records import InvalidEventError, check_read_event
from streams.model.runbooks import RunbookSet, load_runbook_set
from streams.replay.compare import Classify, RecordedDecision, ReplayReport, WhatIf, replay, what_if
from streams.settings import AckSettings, Settings


class ReplayError(InvalidInputError):
    """The replay cannot run (bad time, unreadable model, ...); the message says why."""


@dataclass
class Recorded:
    """What the topics hold: events by id, their positions, and the decisions in order."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    positions: dict[str, tuple[str, int, int, int]] = field(
        default_factory=dict
    )  # id -> (topic, partition, offset, ts)
    decisions: list[RecordedDecision] = field(default_factory=list)
    window: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # (topic, p) -> [start, stop)
    undecodable: int = 0

    def in_window(self, event_id: str) -> bool:
        topic, partition, offset, _ = self.positions[event_id]
        start, stop = self.window.get((topic, partition), (0, 0))
        return start <= offset < stop


async def read_recorded(
    settings: Settings,
    since_ms: int,
    until_ms: int,
    *,
    codec: Codec | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Recorded:
    codec = codec or default_codec()
    prefix = settings.topic_prefix
    schemas = value_schemas(settings.topics_file)
    names = [prefix + t for t in (*EVENT_TOPICS, "decisions")]
    consumer = AIOKafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    out = Recorded()
    try:
        await refresh_metadata(consumer)
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            raise ReplayError(f"no topics under the prefix {prefix!r}: nothing recorded to replay")
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        event_tps = [tp for tp in tps if not tp.topic.endswith("decisions")]
        starts = await consumer.offsets_for_times({tp: since_ms for tp in event_tps})
        stops = await consumer.offsets_for_times({tp: until_ms + 1 for tp in event_tps})
        for tp in event_tps:
            start = starts[tp].offset if starts[tp] is not None else end[tp]
            stop = stops[tp].offset if stops[tp] is not None else end[tp]
            out.window[(tp.topic[len(prefix) :], tp.partition)] = (start, stop)
        todo = {tp for tp in tps if end[tp] > begin[tp]}
        total = sum(end[tp] - begin[tp] for tp in tps)
        for tp in tps:
            consumer.seek(tp, begin[tp])
        done = 0
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, records in batches.items():
                topic = tp.topic[len(prefix) :]
                for r in records:
                    if r.offset >= end[tp]:
                        break
                    done += 1
                    try:
                        value = codec.decode(r.value, expect=schemas.get(topic))
                        if topic != "decisions":
                            check_read_event(r.key, value)
                    except (CodecError, InvalidEventError):
                        out.undecodable += 1  # dead-lettered by the agent: no decision expected
                        continue
                    if topic == "decisions":
                        out.decisions.append(RecordedDecision(value, r.partition, r.offset, r.timestamp))
                    else:
                        out.events.setdefault(value["event_id"], value)
                        out.positions.setdefault(value["event_id"], (topic, r.partition, r.offset, r.timestamp))
                if records and (records[-1].offset >= end[tp] - 1):
                    todo.discard(tp)
            if progress:
                progress(done, total)
    finally:
        await consumer.stop()
    return out


def model_classify(path: str | Path) -> Callable[[Sequence[Mapping[str, Any]]], list[Verdict]]:
    """A what-if model as decide's batched classify (the mapping agents/decide.py uses)."""
    from classifier import load_classifier

    try:
        clf = load_classifier(path)
    except Exception as exc:  # noqa: BLE001 - the classifier's named errors, shown as one line
        raise ReplayError(f"--model {path}: {type(exc).__name__}: {exc}") from None

    def classify(events: Sequence[Mapping[str, Any]]) -> list[Verdict]:
        return [Verdict.of(p) for p in clf.predict_batch(list(events))]

    return classify


@dataclass
class ReplayResult:
    replay: ReplayReport
    recorded: Recorded
    whatif: WhatIf | None = None
    changed: ReplayReport | None = None


def run_replay(
    recorded: Recorded,
    baseline_runbooks: RunbookSet,
    *,
    session: str | None = None,
    runbooks: RunbookSet | None = None,
    classify: Classify | None = None,
    ack: AckSettings | None = None,
) -> ReplayResult:
    """Replay with the recorded configuration; with ``runbooks``/``classify`` also the what-if."""
    in_window = recorded.in_window
    sessions = (lambda s: s == session) if session else (lambda s: True)
    whatif = runbooks is not None or classify is not None
    base = replay(
        recorded.events,
        recorded.decisions,
        configured_context(baseline_runbooks, ack),
        in_window,
        compare_sessions=sessions,
        keep_results=whatif,
    )
    decided = {d.value["event_id"] for d in recorded.decisions}
    base.events_without_decision = sorted(
        eid
        for eid in recorded.events
        if eid not in decided and in_window(eid) and (not session or recorded.events[eid]["session_key"] == session)
    )
    result = ReplayResult(replay=base, recorded=recorded)
    if whatif:
        changed = replay(
            recorded.events,
            recorded.decisions,
            configured_context(runbooks or baseline_runbooks, ack),
            in_window,
            classify=classify,
            compare_sessions=sessions,
            keep_results=True,
            rewind_plan=base.rewind_plan,
            use_recorded_inputs=False,
        )
        result.changed, result.whatif = changed, what_if(base, changed)
    return result


def render(result: ReplayResult, limit: int = 20) -> str:
    r = result.replay
    lines = [
        f"replayed {r.folded} decisions; compared {r.compared} in the window: {r.identical} identical "
        f"({r.identical_pct:.2f} %), {len(r.differences)} differ"
    ]
    if r.by_kind:
        lines.append("  by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(r.by_kind.items())))
    versions = set(r.runbook_versions) - {r.runbook_version_used}
    if versions:
        lines.append(
            f"  WARNING: decisions recorded with runbook set(s) {', '.join(sorted(versions))}; "
            f"replayed with {r.runbook_version_used} (pass --runbooks DIR of the recorded version)"
        )
    older = sorted(set(r.decide_versions) - {DECIDE_VERSION})
    if older:
        lines.append(
            f"  WARNING: {sum(r.decide_versions[v] for v in older)} decisions were recorded by decide version(s) "
            f"{', '.join(v or '(unrecorded)' for v in older)}; this is version {DECIDE_VERSION}, so they may differ"
        )
    if r.events_without_decision:
        lines.append(
            f"  events with no decision: {len(r.events_without_decision)} (e.g. {', '.join(r.events_without_decision[:3])})"
        )
    if r.decisions_without_event:
        lines.append(
            f"  decisions with no event (out of retention or after the read): {len(r.decisions_without_event)}"
        )
    if r.rewinds:
        lines.append(f"  re-processed after a restart (folded again from the earlier state): {r.rewinds}")
    for field_name, n in r.by_field.most_common():
        lines.append(f"  field {field_name}: differs in {n}")
    for d in r.differences[:limit]:
        lines.append(
            f"  {d.session_key} {d.event_id}: "
            + ", ".join(f"{f}: {_get(d.recorded, f)!r} -> {_get(d.replayed, f)!r}" for f in d.fields)
        )
    if result.whatif is not None:
        w = result.whatif.summary()
        lines.append(f"what-if: {w['notifications_added']} notifications added, {w['notifications_removed']} removed")
        for receiver in sorted(set(w["added_by_receiver"]) | set(w["removed_by_receiver"])):
            lines.append(
                f"  {receiver}: +{w['added_by_receiver'].get(receiver, 0)} -{w['removed_by_receiver'].get(receiver, 0)}"
            )
        for gate, n in w["suppressions_by_gate"].items():
            lines.append(f"  gate {gate}: stopped {n['before']} -> {n['after']}")
        lines.append(f"  escalations: {w['escalations']['before']} -> {w['escalations']['after']}")
    return "\n".join(lines)


def _get(record: Mapping[str, Any], dotted: str) -> Any:
    head, _, tail = dotted.partition(".")
    value = record.get(head)
    return value.get(tail) if tail and isinstance(value, Mapping) else value


def as_json(result: ReplayResult) -> str:
    r = result.replay
    out: dict[str, Any] = {
        "summary": r.summary(),
        "differences": [
            {
                "event_id": d.event_id,
                "session_key": d.session_key,
                "fields": d.fields,
                "recorded": {f: _get(d.recorded, f) for f in d.fields},
                "replayed": {f: _get(d.replayed, f) for f in d.fields},
            }
            for d in r.differences
        ],
    }
    if result.whatif is not None:
        out["what_if"] = {
            **result.whatif.summary(),
            "added": [list(k) for k in result.whatif.added],
            "removed": [list(k) for k in result.whatif.removed],
        }
    return json.dumps(out, indent=2, default=str)


def parse_time(text: str) -> int:
    """Epoch ms from ISO 8601 (``2026-11-22T03:00:00Z``), epoch ms digits, or ``now-2h``."""
    import time
    from datetime import datetime

    from streams.model.yamlfile import parse_duration_ms

    text = text.strip()
    now = int(time.time() * 1000)
    try:
        if text == "now":
            return now
        if text.startswith("now-"):
            return now - parse_duration_ms(text[4:])
        if text.isdigit():
            return int(text)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    except ValueError as exc:
        raise ReplayError(f"not a time: {text!r} ({exc}); use ISO 8601, epoch ms or now-2h") from None


def main(
    settings: Settings,
    since: str,
    until: str,
    *,
    channels: Mapping[str, ChannelSpec],
    session: str | None = None,
    runbooks_dir: str | None = None,
    model: str | None = None,
    as_json_output: bool = False,
    baseline_dir: str | None = None,
) -> int:
    import asyncio

    from streams.progress import Progress

    since_ms, until_ms = parse_time(since), parse_time(until)
    if until_ms < since_ms:
        raise ReplayError("--until is before --since")
    baseline = load_runbook_set(baseline_dir or settings.runbooks_dir, channels=channels)
    changed = load_runbook_set(runbooks_dir, channels=channels) if runbooks_dir else None
    classify = model_classify(model) if model else None
    bar: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(Progress(total, enabled=sys.stderr.isatty() or total >= 1000))
        bar[0].update(done)

    recorded = asyncio.run(read_recorded(settings, since_ms, until_ms, progress=progress))
    if bar:
        bar[0].done()
    result = run_replay(recorded, baseline, session=session, runbooks=changed, classify=classify, ack=settings.ack)
    print(as_json(result) if as_json_output else render(result))
    # a replay that differs from its records: EXIT_DIFFERS (it said 4, which means "a service is unavailable")
    return 0 if not result.replay.differences or changed is not None or classify is not None else EXIT_DIFFERS
