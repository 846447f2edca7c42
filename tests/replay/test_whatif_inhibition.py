"""What-if replay applies inhibition across sessions exactly as the decide agent does.

The agent keeps, per session, the routing labels of its firing alerts that can
inhibit others (a global table), and every other session's flush sees them. Replay's
what-if rebuilds that table from the folded decisions. It once rebuilt it from the
raw alert state instead of routing labels, so no inhibit rule ever matched and a
what-if never inhibited across sessions.
"""

from __future__ import annotations

from dataclasses import replace

from streams.core.decide import Context, Verdict, decide
from streams.core.gates import inhibition_sources
from streams.core.messages import firing_labels
from streams.replay.compare import RecordedDecision, replay
from tests.decide.helpers import MIN, T0, alert, starter_set

URGENT = Verdict(category="availability", severity="urgent", classifier="test-1")
WARNING = Verdict(category="availability", severity="warning", classifier="test-1")


def run_like_the_agent(events, verdicts):
    """Fold events one per batch, keeping the inhibitors table the way the decide agent keeps it."""
    base = Context(runbooks=starter_set())
    states: dict[str, dict] = {}
    inhibitors: dict[str, list] = {}
    rules = base.runbooks.routing.inhibit_rules
    out = []
    for i, event in enumerate(events):
        sources = tuple((k, labels) for k, v in sorted(inhibitors.items()) for labels in v)
        ctx = replace(base, verdict=verdicts[event["event_id"]], inhibitors=sources)
        result = decide(states.get(event["session_key"]), event, ctx)
        states[event["session_key"]] = result.state
        # what the agent writes to its inhibitors table: the routing labels of the firing
        # alerts that a rule can take as a source
        mine = inhibition_sources(firing_labels(result.state, event["org"]), rules)
        if mine:
            inhibitors[event["session_key"]] = mine
        else:
            inhibitors.pop(event["session_key"], None)
        for record in result.all_records:
            out.append(RecordedDecision(record, 0, len(out), 1000 + 10 * i))
    return base, out


def test_a_what_if_inhibits_across_sessions_as_the_agent_does():
    # the same alert on the same host, critical in one session and a warning in another
    api_down = alert("HostHighCpuLoad", service="api", instance="api-2:9100", session="acme:a:down", at=T0, eid="down")
    api_slow = alert(
        "HostHighCpuLoad", service="api", instance="api-2:9100", session="acme:a:slow", at=T0 + MIN, eid="slow"
    )
    flush = alert(
        "HostHighCpuLoad", service="api", instance="api-2:9100", session="acme:a:slow", at=T0 + 5 * MIN, eid="later"
    )  # a re-send: folds the slow session's group timer first
    events = [api_down, api_slow, flush]
    verdicts = {"down": URGENT, "slow": WARNING, "later": WARNING}
    base, recorded = run_like_the_agent(events, verdicts)
    inhibited = [
        d.value for d in recorded if any(g["gate"] == "inhibit" and g["verdict"] == "stop" for g in d.value["gates"])
    ]
    assert inhibited and {d["session_key"] for d in inhibited} == {"acme:a:slow"}, (
        "the agent inhibits the warning session"
    )

    report = replay({e["event_id"]: e for e in events}, recorded, base, lambda _: True, use_recorded_inputs=False)
    assert report.differences == [], [(d.event_id, d.fields) for d in report.differences]
    assert report.identical == report.compared == len(recorded)


def test_the_decision_carries_the_writes_the_agent_and_replay_apply():
    """One derivation: decide's writes are the routing labels the inhibit rules take as sources."""
    from streams.core.tables import apply_writes

    base = Context(runbooks=starter_set())
    event = alert("PrometheusTargetMissing", service="api", session="acme:a:down", at=T0, eid="down")
    result = decide(None, event, replace(base, verdict=URGENT))
    writes = result.writes
    rules = base.runbooks.routing.inhibit_rules
    assert writes.inhibitors == inhibition_sources(firing_labels(result.state, "acme"), rules)
    assert (
        writes.inhibitors and writes.inhibitors[0]["severity"] == "urgent" and writes.inhibitors[0]["service"] == "api"
    )
    tables = {"timers": {}, "inhibitors": {}, "silences": {}}
    apply_writes(writes, partition=3, **tables)
    assert tables["inhibitors"] == {"acme:a:down": writes.inhibitors}
    assert tables["timers"]["acme:a:down"]["p"] == 3 and set(tables["timers"]["acme:a:down"]["t"]) == set(
        result.state["timers"]
    )
