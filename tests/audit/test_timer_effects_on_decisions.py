"""Timer effects ride on their decisions, not on outbox; the audit trail still shows every one.

The decide agent's real batch (real codec, decide, routing) goes through the projector's
real write path into the audit store on both backends; the timeline read back must hold
each event's effects as decide made them, schedules and cancels included, while ``outbox``
held only what a sink acts on.
"""

from __future__ import annotations

from collections import Counter

from streams.audit import store, timeline
from streams.audit.store import Position
from streams.kafka.codec import SCHEMAS_DIR, Codec
from streams.model.effects import ON_DECISION, timer_effects
from streams.replay.compare import differing_fields
from tests.agent_bodies.test_agents_unit import CODEC, FakeOut, decide_agent, dict_tables, message
from tests.decide.helpers import MIN, SESSION, T0, alert, webhook

PARTITION = 3


def _decide() -> tuple[FakeOut, list[tuple[dict, dict, list[dict]]]]:
    """An alert, a later alert that flushes its group inline (notice + escalation timers), an ack that cancels them."""
    events = [
        alert(at=T0, eid="a1"),
        alert(at=T0 + 31_000, instance="api-2:9100", eid="a2"),
        webhook("ack", at=T0 + 2 * MIN, eid="k1"),
    ]
    tables, out = dict_tables(), FakeOut()
    agent = decide_agent(tables, [])
    batch = agent.decide_batch([(message(e, partition=PARTITION), e) for e in events], tables.sessions, out)
    return out, batch.observed


def _projected(out: FakeOut) -> list[tuple[Position, dict]]:
    """The records as the projector reads them: decoded, each topic's offsets counting from 0."""
    offsets: Counter[str] = Counter()
    items = []
    for topic, _, value in out.records:
        items.append((Position(topic, PARTITION, offsets[topic]), CODEC.decode(value)))
        offsets[topic] += 1
    return items


def test_outbox_holds_only_deliverable_effects_and_the_timeline_still_shows_the_timers(audit_db):
    out, observed = _decide()
    decided = [e for _, _, effects in observed for e in effects]
    kinds = Counter(e["type"] for e in decided)
    assert kinds["schedule_timer"] >= 2 and kinds["cancel_timers"] == 1 and kinds["notify"] >= 1, kinds

    outbox = out.decoded("outbox")
    assert outbox and {e["type"] for e in outbox} <= {"notify", "remediate"}
    assert [e["effect_id"] for e in outbox] == [e["effect_id"] for e in decided if e["type"] not in ON_DECISION]

    # Each decision lists all its effect ids, as before, and carries its timer effects: rebuilt, each is the
    # very record outbox used to hold (an Effect encoded and decoded).
    decisions = out.decoded("decisions")
    assert [d["effect_ids"] for d in decisions] == [[e["effect_id"] for e in effects] for _, _, effects in observed]
    carried = [e for d in decisions for e in timer_effects(d)]
    assert carried == [CODEC.decode(CODEC.encode("opsloop.Effect", e)) for e in decided if e["type"] in ON_DECISION]

    _, engine = audit_db
    store.migrate(engine)
    store.write_batch(engine, _projected(out))
    store.write_batch(engine, _projected(out))  # a redelivered batch adds nothing
    assert store.count_rows(engine)["audit_effects"] == len(decided)

    rows = store.session_rows(engine, SESSION)
    rows["events"] = [event for event, _, _ in observed]  # the events topic is not part of this batch
    shown = {
        e["event_id"]: [(f["effect_id"], f["type"], f["timer"]) for f in e["effects"]] for e in timeline.build(rows)
    }
    for event, _, effects in observed:  # in the order decide made them, timer specs and all
        assert shown[event["event_id"]] == [(e["effect_id"], e["type"], e["timer"]) for e in effects]
    text = timeline.render(SESSION, timeline.build(rows))
    assert "-> schedule_timer" in text and "-> cancel_timers" in text


def test_a_decision_written_before_the_move_reads_without_timer_effects_and_replays_identical():
    """Schema evolution: the previous Decision schema (schemas/history) resolves with ``timer_effects`` [];
    replay compares such a record on effect_ids alone, and a record that holds them on them too."""
    _, observed = _decide()
    replayed = next(record for _, record, _ in observed if record["timer_effects"])
    older = Codec()
    older.register((SCHEMAS_DIR / "history" / "opsloop.Decision.v3.avsc").read_text())
    written = older.encode("opsloop.Decision", {k: v for k, v in replayed.items() if k != "timer_effects"})
    recorded = CODEC.decode(written, expect="opsloop.Decision")
    assert recorded["timer_effects"] == [] and recorded["effect_ids"] == replayed["effect_ids"]
    assert differing_fields(recorded, replayed) == []
    current = CODEC.decode(CODEC.encode("opsloop.Decision", replayed))
    assert differing_fields(current, replayed) == []
    moved = dict(current, timer_effects=[dict(t, runbook="other") for t in current["timer_effects"]])
    assert differing_fields(moved, replayed) == ["timer_effects"]
