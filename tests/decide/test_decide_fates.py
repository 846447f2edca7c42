"""Every event type has a fate: each seed notification type ends in a notification, a
suppression by a named gate, or an ``unmatched`` record sent to the default receiver.

The seed documents' types (the project's design seeds: the notification router's
EVENT_SEVERITY and the automation engine's events) are folded through the pure decide
with the starter runbook set and the shipped classifier, as a worker does; README.md's
table says the same thing and is checked against it here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from functools import cache

import pytest

from agents.sinks.channels import specs
from streams import metrics
from streams.cli.main import main
from streams.core.decide import Context, Verdict
from streams.model.matchers import parse_matcher
from streams.model.routing import default_routing
from streams.model.runbooks import load_runbook_set
from streams.model.silences import Silence
from streams.model.yamlfile import ConfigError
from tests.decide.helpers import MIN, ROOT, RUNBOOKS, T0, Sim, alert, scan, starter_set, webhook

FINDING = {"resource": "aws_s3_bucket.logs", "change_type": "deleted", "rule": "", "severity": "", "detail": ""}

# type, how it is posted (webhook, or a scan with this status), the seed's severity,
# then what the starter set does with it: outcome, runbook, receivers, severity sent.
SEED_TYPES = [
    ("pr.created", "webhook", "action", "notified", "agent-pr-created", "teams-ops", "action"),
    ("pr.review_requested", "webhook", "action", "notified", "agent-pr-created", "teams-ops", "action"),
    ("agent.failed", "webhook", "urgent", "notified", "agent-failed", "oncall-slack", "urgent"),
    ("agent.needs_input", "webhook", "action", "notified", "agent-needs-input", "infra-slack", "action"),
    ("agent.budget_exceeded", "webhook", "warning", "notified", "agent-budget-exceeded", "infra-slack", "warning"),
    ("drift.detected", "webhook", "warning", "notified", "agent-findings", "infra-slack", "warning"),
    ("drift.auto_remediated", "webhook", "info", "notified", "agent-work-done", "log", "info"),
    ("finding.critical", "webhook", "urgent", "notified", "agent-critical", "oncall-slack", "urgent"),
    ("scan.completed.clean", "scan clean", "info", "notified", "agent-work-done", "log", "info"),
    ("scan.completed.findings", "scan findings", "warning", "notified", "drift-detected", "teams-ops", "warning"),
    ("scan.completed.findings", "webhook", "warning", "notified", "agent-findings", "infra-slack", "warning"),
    ("chain_complete", "webhook", "info", "notified", "agent-work-done", "log", "info"),
    ("deployment_complete", "webhook", "info", "notified", "agent-work-done", "log", "info"),
    ("build.queued", "webhook", "—", "unmatched", "default", "infra-slack", "info"),
]


@cache
def model():
    from classifier import load_classifier

    return load_classifier()


def event_of(etype: str, posted: str, at: int = T0, session: str = "") -> dict:
    if posted.startswith("scan"):
        status = posted.split()[1]
        ev = scan(status, at=at, findings=[FINDING] if status == "findings" else None)
        ev["type"] = etype
        return ev
    return webhook(etype, at=at, session=session or f"acme:agents:{etype}", subject="run-42")


def verdict_of(event: dict) -> Verdict:
    return Verdict.of(model().predict_batch([event])[0])


def row(etype, posted, seed, outcome, runbook, receivers, severity) -> str:
    sent = f"{receivers} ({severity})"
    if outcome == "unmatched":
        sent = f"default receiver {receivers}, once per episode"
    return f"| `{etype}` | {posted} | {seed} | {outcome} | {runbook} | {sent} |"


@pytest.mark.parametrize("etype, posted, seed, outcome, runbook, receivers, severity", SEED_TYPES)
def test_each_seed_type_ends_in_a_notification(etype, posted, seed, outcome, runbook, receivers, severity):
    event = event_of(etype, posted)
    sim = Sim(Context(runbooks=starter_set()))
    record = sim.feed(event, verdict_of(event)).record
    sent = sim.notifications()
    assert record["outcome"] == outcome and record["runbook"] == runbook
    assert [n["notify"]["receiver"] for n in sent] == [receivers]
    assert {n["notify"]["severity"] for n in sent} == {severity}
    assert all(g["verdict"] == "pass" for g in record["gates"]) and record["gates"]
    # the record's severity is the classifier's; what it was told as, when otherwise, is decide's note
    # (the audit's incident reads it: an agent.failed that paged as urgent is an urgent incident)
    assert record["matched"].get("severity", record["severity"]) == severity


def test_the_readme_table_is_what_decide_does():
    readme = (ROOT / "README.md").read_text()
    for entry in SEED_TYPES:
        assert row(*entry) in readme, row(*entry)


def test_a_notice_again_is_stopped_by_a_named_gate():
    sim = Sim(Context(runbooks=starter_set()))
    first = sim.feed(webhook("agent.needs_input", at=T0, subject="run-42", eid="a"))
    again = sim.feed(webhook("agent.needs_input", at=T0 + MIN, subject="run-42", eid="b"))
    assert first.record["outcome"] == "notified" and again.record["outcome"] == "suppressed"
    assert {
        "gate": "dedupe",
        "verdict": "stop",
        "reason": "infra-slack: same notification 1m ago (window 1h)",
    } in again.record["gates"]
    later = sim.feed(webhook("agent.needs_input", at=T0 + 61 * MIN, subject="run-42", eid="c"))
    assert later.record["outcome"] == "notified" and len(sim.notifications()) == 2
    # the budget runbook's cooldown (1h) stops a second, different budget notice
    sim.feed(webhook("agent.budget_exceeded", at=T0 + 62 * MIN, subject="run-1", eid="d"))
    capped = sim.feed(webhook("agent.budget_exceeded", at=T0 + 63 * MIN, subject="run-2", eid="e"))
    assert capped.record["outcome"] == "suppressed"
    assert [g["gate"] for g in capped.record["gates"] if g["verdict"] == "stop"] == ["cooldown"]


def test_a_silenced_notice_is_recorded_as_suppressed_by_the_silence_gate():
    silence = Silence(
        silence_id="s1",
        matchers=(parse_matcher('event_type="finding.critical"'),),
        starts_at=T0 - MIN,
        ends_at=T0 + MIN,
    )
    sim = Sim(replace(Context(runbooks=starter_set()), silences=(silence,)))
    d = sim.feed(webhook("finding.critical", at=T0))
    assert d.record["outcome"] == "suppressed" and not sim.notifications()
    assert d.record["gates"][0]["gate"] == "silence" and d.record["gates"][0]["verdict"] == "stop"


def test_unmatched_tells_the_default_receiver_once_per_episode():
    sim = Sim(Context(runbooks=starter_set()))
    session = "acme:alert:TargetDown:api"
    first = sim.feed(webhook("build.queued", at=T0, session=session, eid="u1"))
    second = sim.feed(webhook("build.started", at=T0 + MIN, session=session, eid="u2"))
    assert first.record["outcome"] == second.record["outcome"] == "unmatched"
    assert first.record["matched"]["unmatched"] == "build.queued"
    assert [n["notify"]["receiver"] for n in sim.notifications()] == ["infra-slack"]
    assert "Unmatched event type build.queued" in sim.notifications()[0]["notify"]["title"]
    assert {
        "gate": "unmatched",
        "verdict": "stop",
        "reason": "infra-slack was told of unmatched events in episode 0",
    } in (second.record["gates"])
    # a new episode of the session (an alert fires): the default receiver hears of it again
    sim.feed(alert(at=T0 + 2 * MIN, session=session))
    third = sim.feed(webhook("build.queued", at=T0 + 20 * MIN, session=session, eid="u3"))
    assert third.record["outcome"] == "unmatched"
    assert [n["notify"]["receiver"] for n in sim.notifications() if "Unmatched" in n["notify"]["title"]] == [
        "infra-slack",
        "infra-slack",
    ]


def test_without_routing_yaml_unmatched_is_recorded_only():
    rset = replace(starter_set(), routing=default_routing())
    sim = Sim(Context(runbooks=rset))
    d = sim.feed(webhook("build.queued", at=T0))
    assert d.record["outcome"] == "unmatched" and not d.effects


def test_known_types_that_change_nothing_stay_recorded():
    sim = Sim(Context(runbooks=starter_set()))
    for i, etype in enumerate(("ack", "pr.closed", "agent.succeeded", "remediation.approved")):
        d = sim.feed(webhook(etype, at=T0 + i, eid=f"k{i}"))
        assert d.record["outcome"] == "recorded" and not d.effects, etype
    clean = sim.feed(scan("clean", at=T0 + 10))  # plain scan.completed: no runbook names it
    assert clean.record["outcome"] == "recorded" and not clean.effects


def test_a_stated_severity_beats_the_runbooks():
    sim = Sim(Context(runbooks=starter_set()))
    stated = Verdict(severity="urgent", severity_basis="stated")
    sim.feed(webhook("chain_complete", at=T0), stated)
    assert [(n["notify"]["receiver"], n["notify"]["severity"]) for n in sim.notifications()] == [
        ("oncall-slack", "urgent")
    ]


def test_the_unmatched_metric_counts_by_kind():
    before = metrics.EVENTS_UNMATCHED.labels("webhook")._value.get()  # noqa: SLF001
    sim = Sim(Context(runbooks=starter_set()))
    event = webhook("build.queued", at=T0)
    d = sim.feed(event)
    metrics.observe_decisions([(event, d.record, d.effects), (event, d.record, d.effects)], T0 / 1000)
    assert metrics.EVENTS_UNMATCHED.labels("webhook")._value.get() == before + 2  # noqa: SLF001
    assert "opsloop_events_unmatched_total" in metrics.exported_names()


def test_route_test_shows_the_fate_of_a_type(capsys):
    assert main(["route", "test", "--dir", str(RUNBOOKS), "type=build.queued", "category=other"]) == 0
    assert "unmatched → default receiver infra-slack" in capsys.readouterr().out
    assert main(["route", "test", "--dir", str(RUNBOOKS), "type=agent.needs_input", "category=other"]) == 0
    out = capsys.readouterr().out
    assert "runbook:    agent-needs-input" in out and "severity:   action" in out and "notify:     infra-slack" in out


def test_a_runbook_severity_outside_the_taxonomy_names_file_and_line(tmp_path):
    target = tmp_path / "runbooks"
    shutil.copytree(RUNBOOKS, target)
    (target / "agent-needs-input.yaml").write_text("name: x\nseverity: critical\nmatch: {type: a.b}\n")
    with pytest.raises(ConfigError) as err:
        load_runbook_set(target, channels=specs())
    assert str(err.value).endswith(
        "agent-needs-input.yaml:2: runbook 'x': severity must be one of info, warning, action, urgent"
    )


def test_a_token_limited_to_one_org_may_not_expire_or_replace_another_orgs_silence():
    """A control token of org a expired org b's silence by naming its id (decide deleted any id from the
    global table), and a silence.created naming that id replaced it: org b was paged in its maintenance."""
    from streams.core.decide import INPUT_SILENCES, decide, recorded_inputs
    from streams.ingest.scopes import scope_silence_to_org
    from streams.model.silences import expire_event, silence_event

    theirs = Silence("sb", (parse_matcher('org="b"'), parse_matcher('service="db"')), T0 - MIN, T0 + 60 * MIN)
    ours = Silence("sa", (parse_matcher('org="a"'), parse_matcher('service="db"')), T0 - MIN, T0 + 60 * MIN)
    ctx = replace(Context(runbooks=starter_set()), silences=(theirs, ours))

    def limited(event: dict, org: str) -> dict:
        scope_silence_to_org(event, org)  # what ingest does for a token without operator: true
        return event

    expire_b = limited(expire_event("sb", org="a", now_ms=T0), "a")
    refused = decide(None, expire_b, ctx)
    assert refused.silence is None
    assert refused.record["matched"]["silence_error"] == (
        "silence sb is not org 'a''s own; a token limited to its org may not change it"
    )
    # replay sees the same: the silence that refused it is recorded as an input
    assert [s["id"] for s in json.loads(refused.record["matched"][INPUT_SILENCES])] == ["sb"]
    replay_ctx = recorded_inputs([refused.record], Context(runbooks=starter_set()))
    assert decide(None, expire_b, replay_ctx).silence is None

    replace_b = limited(silence_event(replace(theirs, matchers=ours.matchers), org="a", now_ms=T0), "a")
    assert decide(None, replace_b, ctx).silence is None
    # its own org's silence, an unknown id, and an operator's expiry (no limit) go through
    assert decide(None, limited(expire_event("sa", org="a", now_ms=T0), "a"), ctx).silence.silence_id == "sa"
    assert decide(None, limited(expire_event("gone", org="a", now_ms=T0), "a"), ctx).silence.value is None
    operator = decide(None, expire_event("sb", org="a", now_ms=T0), ctx)
    assert operator.silence.silence_id == "sb" and operator.silence.value is None
