"""The pure comparison: a simulated agent (including a restart that re-reads an older
state) is reproduced exactly, and a changed record is reported by field."""

from __future__ import annotations

from dataclasses import replace

from streams.core.decide import Context, decide
from streams.replay.compare import RecordedDecision, differing_fields, recorded_verdict, replay
from tests.decide.helpers import MIN, T0, URGENT_DOWN, alert, starter_set, webhook


def simulate(events, restart_after: int, restored_from: int):
    """Fold like the agent; after event ``restart_after`` the worker dies, re-reads the state
    from before event ``restored_from`` and processes those events again."""
    base = Context(runbooks=starter_set())
    states = [None]
    out = []

    def fold(state, event):
        r = decide(state, event, replace(base, verdict=URGENT_DOWN))
        for f in r.fired:
            out.append(f.record)
        out.append(r.record)
        return r.state

    for event in events[: restart_after + 1]:
        states.append(fold(states[-1], event))
    state = states[restored_from]
    for event in events[restored_from:]:
        state = fold(state, event)
    return base, [RecordedDecision(rec, 0, i, 1000 + i) for i, rec in enumerate(out)]


def traffic():
    events = [alert(at=T0 + i * MIN, eid=f"e{i}") for i in range(8)]
    events.insert(4, webhook("ack", at=T0 + 4 * MIN + 1, eid="ack"))
    events.append(alert(status="resolved", at=T0 + 20 * MIN, eid="r"))
    return events


def test_a_restart_from_an_older_state_is_reproduced():
    events = traffic()
    base, recorded = simulate(events, restart_after=6, restored_from=3)
    assert len({d.value["event_id"] for d in recorded}) < len(recorded)  # events were decided twice
    report = replay({e["event_id"]: e for e in events}, recorded, base, lambda _: True)
    assert report.differences == []
    assert report.identical == report.compared == len(recorded)
    assert report.rewinds == 1


def test_a_changed_record_is_reported_by_field():
    events = traffic()
    base, recorded = simulate(events, restart_after=len(events) - 1, restored_from=len(events))
    target = next(d for d in recorded if d.value["outcome"] == "notified")
    changed = [
        RecordedDecision(
            {**d.value, "outcome": "suppressed", "matched": {**d.value["matched"], "receivers": "x"}},
            d.partition,
            d.offset,
            d.timestamp,
        )
        if d is target
        else d
        for d in recorded
    ]
    report = replay({e["event_id"]: e for e in events}, changed, base, lambda _: True)
    assert [(d.event_id, d.fields) for d in report.differences] == [
        (target.value["event_id"], ["matched.receivers", "outcome"])
    ]
    assert report.identical == report.compared - 1
    assert report.rewinds == 0  # no repeats: nothing is searched for, the difference stands


def test_window_and_verdict():
    events = traffic()
    base, recorded = simulate(events, restart_after=len(events) - 1, restored_from=len(events))
    report = replay({e["event_id"]: e for e in events}, recorded, base, lambda eid: eid in {"e5", "e6"})
    assert report.compared == 2 and report.identical == 2 and report.folded == len(recorded)
    rec = next(d.value for d in recorded if d.value["event_id"] == "e0")
    assert recorded_verdict(rec).severity == URGENT_DOWN.severity and recorded_verdict(rec).classifier == "test-1"
    assert differing_fields({"a": 1, "m": {"x": "1"}}, {"a": 1, "m": {"x": "2", "y": "3"}}) == ["m.x", "m.y"]


def test_decisions_of_another_decide_version_are_flagged():
    """Records written before decide recorded its version (or by another version) differ, and say why."""
    from streams.core.decide import DECIDE_VERSION
    from streams.replay.run import Recorded, ReplayResult, render

    events = traffic()
    base, recorded = simulate(events, restart_after=len(events) - 1, restored_from=len(events))
    assert {d.value["decide_version"] for d in recorded} == {DECIDE_VERSION}
    older = [
        RecordedDecision(
            {k: v for k, v in d.value.items() if k != "decide_version"}, d.partition, d.offset, d.timestamp
        )
        if i < 3
        else d
        for i, d in enumerate(recorded)
    ]
    report = replay({e["event_id"]: e for e in events}, older, base, lambda _: True)
    assert [d.fields for d in report.differences] == [["decide_version"]] * 3
    assert report.decide_versions == {"": 3, DECIDE_VERSION: len(recorded) - 3}
    text = render(ReplayResult(replay=report, recorded=Recorded()))
    assert f"3 decisions were recorded by decide version(s) (unrecorded); this is version {DECIDE_VERSION}" in text
