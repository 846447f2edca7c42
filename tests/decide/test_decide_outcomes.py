"""Outcomes feed back: a remediation's result runs its step's on_failure / then (streams/core/outcomes.py).

The outcome events are built by the sink's own builder (agents/sinks/outcomes.py), so
these pure tests fold exactly what a worker's sink produces.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from agents.sinks.channels import specs
from agents.sinks.delivery import Outcome
from agents.sinks.outcomes import outcome_event, outcome_type
from streams.core.decide import Context
from streams.model.runbooks import load_runbook_set
from streams.model.yamlfile import ConfigError
from tests.decide.helpers import MIN, RUNBOOKS, T0, WARN_CPU, Sim, alert

HEAD = """\
name: fix-cpu
match: {category: cpu}
policy: {escalate_from: warning, max_consecutive: 10}
steps:
  - notify: {receiver: infra-slack}
"""
CHAIN = """\
escalation:
  - {after: 0m, receiver: infra-slack}
  - {after: 5m, receiver: oncall-slack}
  - {after: 15m, receiver: pagerduty-primary}
"""


def ctx_with(tmp_path: Path, steps: str, escalation: str = CHAIN, policy: str = "") -> Context:
    target = tmp_path / "runbooks"
    target.mkdir()
    shutil.copy(RUNBOOKS / "routing.yaml", target / "routing.yaml")
    head = HEAD if not policy else HEAD.replace("{escalate_from: warning, max_consecutive: 10}", policy)
    body = textwrap.indent(textwrap.dedent(steps).strip("\n") + "\n", "  ")
    (target / "fix-cpu.yaml").write_text(head + body + escalation)
    return Context(verdict=WARN_CPU, runbooks=load_runbook_set(target, channels=specs()))


def cpu(at: int = T0) -> dict:
    return alert("HostHighCpuLoad", source="alertmanager", at=at, session="acme:alert:cpu:api")


def remediations(effects: list[dict]) -> list[dict]:
    return [e for e in effects if e["type"] == "remediate"]


def outcome(effect: dict, status: str, *, at: int, http_status: int | None = None, error_type: str = "") -> dict:
    etype = outcome_type(status, http_status=http_status, error_type=error_type)
    assert etype is not None
    reason = "" if status == "delivered" else f"gave up after 2 attempt(s): HTTP {http_status}"
    return outcome_event(
        effect,
        etype,
        Outcome(status, 2, http_status=http_status, error=reason, error_type=error_type),
        now_ms=at,
    )


def started(sim: Sim) -> dict:
    d = sim.feed(cpu())
    assert d.record["outcome"] == "notified"
    [effect] = remediations(d.all_effects)
    return effect


def test_the_sink_maps_a_settled_remediation_to_its_event_type() -> None:
    assert outcome_type("delivered", http_status=200) == "remediation.succeeded"
    assert outcome_type("dead", http_status=500, error_type="TransientError") == "remediation.failed"
    assert outcome_type("dead", http_status=403, error_type="PermanentError") == "remediation.failed"
    assert outcome_type("dead", error_type="AmbiguousError") == "remediation.timed_out"
    assert outcome_type("dead", error_type="TransientError") == "remediation.dead"  # unreachable
    assert outcome_type("dead", error_type="MissingSecretError") == "remediation.dead"
    assert outcome_type("dry_run") is None and outcome_type("skipped") is None


def test_a_failure_escalates_to_the_next_step_now_and_a_redelivery_is_a_duplicate(tmp_path: Path) -> None:
    ctx = ctx_with(
        tmp_path,
        """\
      - remediate: {action: scale, endpoint: "http://actions/scale", dry_run: false, retries: 1, timeout: 2s,
                    on_failure: {escalate: true}}
    """,
    )
    sim = Sim(ctx)
    effect = started(sim)
    assert (effect["remediate"]["retries"], effect["remediate"]["timeout_ms"]) == (1, 2000)
    assert "esc:1:1" in sim.pending()

    failed = outcome(effect, "dead", at=T0 + MIN, http_status=500, error_type="TransientError")
    assert failed["type"] == "remediation.failed"
    d = sim.feed(failed)
    assert d.record["outcome"] == "escalated"
    assert d.record["matched"]["remediation"] == "scale"
    assert d.record["matched"]["remediation_effect"] == effect["effect_id"]
    assert d.record["matched"]["remediation_attempts"] == "2"
    [notice] = [e for e in d.effects if e["type"] == "notify"]
    assert notice["notify"]["receiver"] == "oncall-slack"  # step 1, four minutes early
    assert notice["notify"]["title"].startswith("Escalated (remediation scale failed")
    assert "esc:1:1" not in sim.pending() and sim.pending()["esc:1:2"]["at"] == T0 + 15 * MIN

    again = sim.feed(outcome(effect, "dead", at=T0 + 2 * MIN, http_status=500, error_type="TransientError"))
    assert again.record["outcome"] == "duplicate" and again.effects == []


def test_a_failure_without_a_running_chain_tells_the_chains_receivers(tmp_path: Path) -> None:
    ctx = ctx_with(
        tmp_path,
        """\
      - remediate: {action: scale, endpoint: "http://actions/scale", dry_run: false, on_failure: {escalate: true}}
    """,
        policy="{escalate_from: urgent}",  # a warning does not start the chain
    )
    sim = Sim(ctx)
    effect = started(sim)
    assert not any(t.startswith("esc:") for t in sim.pending())
    d = sim.feed(outcome(effect, "dead", at=T0 + MIN, error_type="AmbiguousError"))
    assert d.record["matched"]["remediation_result"] == "timed_out"
    assert d.record["outcome"] == "notified"
    told = sorted(e["notify"]["receiver"] for e in d.effects if e["type"] == "notify")
    assert told == ["infra-slack", "oncall-slack", "pagerduty-primary"]
    assert all(e["notify"]["title"].startswith("Remediation scale timed out") for e in d.effects)


def test_a_failure_notifies_the_named_receiver(tmp_path: Path) -> None:
    ctx = ctx_with(
        tmp_path,
        """\
      - remediate: {action: scale, endpoint: "http://actions/scale", dry_run: false, on_failure: {notify: teams-ops}}
    """,
    )
    sim = Sim(ctx)
    effect = started(sim)
    d = sim.feed(outcome(effect, "dead", at=T0 + MIN, http_status=409, error_type="PermanentError"))
    [notice] = [e for e in d.effects if e["type"] == "notify"]
    assert notice["notify"]["receiver"] == "teams-ops"
    assert notice["notify"]["title"].startswith("Remediation scale failed: HostHighCpuLoad")
    assert "HTTP 409" in notice["notify"]["body"]
    assert d.record["outcome"] == "notified"
    assert "esc:1:1" in sim.pending()  # the chain keeps its pace


def test_a_failure_runs_the_next_action_which_does_not_run_first(tmp_path: Path) -> None:
    ctx = ctx_with(
        tmp_path,
        """\
      - remediate: {action: restart, endpoint: "http://actions/restart", dry_run: false, on_failure: {next: rollback}}
      - remediate: {action: rollback, endpoint: "http://actions/rollback", dry_run: false, timeout: 30s}
    """,
    )
    sim = Sim(ctx)
    effect = started(sim)  # only restart: rollback is its fallback
    assert effect["remediate"]["action"] == "restart"
    d = sim.feed(outcome(effect, "dead", at=T0 + MIN, http_status=500, error_type="TransientError"))
    [fallback] = remediations(d.effects)
    assert fallback["remediate"]["action"] == "rollback" and fallback["remediate"]["timeout_ms"] == 30_000
    assert d.record["outcome"] == "remediating"
    assert [e for e in d.effects if e["type"] == "notify"] == []

    # The fallback succeeds: recorded; nothing else.
    d = sim.feed(outcome(fallback, "delivered", at=T0 + 2 * MIN, http_status=200))
    assert d.record["outcome"] == "remediation-succeeded" and d.effects == []


CHAINED = """\
  - remediate: {action: drain, endpoint: "http://actions/drain", dry_run: false, then: restart, continue_on_failure: true}
  - remediate: {action: restart, endpoint: "http://actions/restart", dry_run: false, then: verify-pool}
  - remediate: {action: verify-pool, endpoint: "http://actions/verify", dry_run: false}
"""


def test_a_chain_runs_link_by_link_on_success(tmp_path: Path) -> None:
    sim = Sim(ctx_with(tmp_path, CHAINED))
    drain = started(sim)
    assert drain["remediate"]["action"] == "drain"
    [restart] = remediations(sim.feed(outcome(drain, "delivered", at=T0 + MIN, http_status=200)).effects)
    assert restart["remediate"]["action"] == "restart"
    [check] = remediations(sim.feed(outcome(restart, "delivered", at=T0 + 2 * MIN, http_status=200)).effects)
    assert check["remediate"]["action"] == "verify-pool"
    assert sim.feed(outcome(check, "delivered", at=T0 + 3 * MIN, http_status=200)).effects == []


def test_continue_on_failure_carries_the_chain_past_a_failure_and_stops_without_it(tmp_path: Path) -> None:
    sim = Sim(ctx_with(tmp_path, CHAINED))
    drain = started(sim)
    d = sim.feed(outcome(drain, "dead", at=T0 + MIN, http_status=502, error_type="TransientError"))
    [restart] = remediations(d.effects)  # drain failed, continue_on_failure: restart anyway
    assert restart["remediate"]["action"] == "restart"
    assert "continue_on_failure" in d.record["matched"]["remediation_next"]
    d = sim.feed(outcome(restart, "dead", at=T0 + 2 * MIN, http_status=500, error_type="TransientError"))
    assert d.effects == [] and d.record["outcome"] == "remediation-failed"  # restart failed: the chain stops


def test_an_outcome_after_the_session_resolved_runs_nothing(tmp_path: Path) -> None:
    ctx = ctx_with(
        tmp_path,
        """\
      - remediate: {action: scale, endpoint: "http://actions/scale", dry_run: false, on_failure: {notify: teams-ops}}
    """,
    )
    sim = Sim(ctx)
    effect = started(sim)
    resolved = alert(
        "HostHighCpuLoad", status="resolved", source="alertmanager", at=T0 + MIN, session="acme:alert:cpu:api"
    )
    sim.feed(resolved)
    d = sim.feed(outcome(effect, "dead", at=T0 + 2 * MIN, http_status=500, error_type="TransientError"))
    assert d.effects == [] and "not firing" in d.record["matched"]["remediation_step"]


@pytest.mark.parametrize(
    ("steps", "line", "reason"),
    [
        (
            '  - remediate: {action: a, endpoint: "http://x/a", on_failure: {next: rollbak}}\n'
            '  - remediate: {action: rollback, endpoint: "http://x/b"}\n',
            6,
            "on_failure.next 'rollbak' is not another remediate step (did you mean 'rollback'?)",
        ),
        (
            '  - remediate: {action: a, endpoint: "http://x/a", then: b}\n'
            '  - remediate: {action: b, endpoint: "http://x/b", on_failure: {next: a}}\n',
            6,
            "remediate 'a': its chain leads back to it",
        ),
        (
            "  - remediate:\n      action: a\n      on_failure: {escalate: true, notify: teams-ops}\n",
            8,
            "expected one of {escalate: true}, {notify: <receiver>}, {next: <action>}",
        ),
        ("  - remediate:\n      action: a\n      on_failure: {page: true}\n", 8, "unknown field 'page'"),
        ("  - remediate:\n      action: a\n      on_failure: {notify: nobody}\n", 8, "unknown receiver 'nobody'"),
        ("  - remediate:\n      action: a\n      retries: -1\n", 8, "retries must be an integer >= 0"),
        ("  - remediate:\n      action: a\n      timeout: soon\n", 8, "remediate: timeout:"),
        (
            '  - remediate:\n      action: a\n      continue_on_failure: "yes"\n',
            8,
            "continue_on_failure must be true or false",
        ),
        (
            '  - remediate: {action: a, endpoint: "http://x/a"}\n  - remediate: {action: a, endpoint: "http://x/b"}\n',
            7,
            "remediate action 'a' appears twice",
        ),
    ],
)
def test_new_step_keys_are_validated_with_file_and_line(tmp_path: Path, steps: str, line: int, reason: str) -> None:
    target = tmp_path / "runbooks"
    target.mkdir()
    shutil.copy(RUNBOOKS / "routing.yaml", target / "routing.yaml")
    (target / "fix-cpu.yaml").write_text(HEAD + steps)
    with pytest.raises(ConfigError) as err:
        load_runbook_set(target, channels=specs())
    assert err.value.line == line, str(err.value)
    assert reason in str(err.value) and "fix-cpu.yaml" in str(err.value)


def test_a_schedule_takes_retries_and_timeout_but_no_outcome_policy(tmp_path: Path) -> None:
    target = tmp_path / "runbooks"
    target.mkdir()
    shutil.copy(RUNBOOKS / "routing.yaml", target / "routing.yaml")
    schedule = (
        'schedules:\n  - name: scan\n    cron: "0 6 * * *"\n'
        '    remediate: {action: dispatch, endpoint: "http://x/s", retries: 0, timeout: 5s%s}\n'
    )
    (target / "schedules.yaml").write_text(schedule % "")
    [loaded] = load_runbook_set(target, channels=specs()).schedules
    assert loaded.remediate is not None and (loaded.remediate.retries, loaded.remediate.timeout) == (0, 5000)
    (target / "schedules.yaml").write_text(schedule % ", on_failure: {escalate: true}")
    with pytest.raises(ConfigError) as err:
        load_runbook_set(target, channels=specs())
    assert err.value.line == 4 and "unknown field 'on_failure'" in str(err.value)


def test_the_audit_timeline_shows_the_outcome_and_the_escalation(tmp_path: Path) -> None:
    from streams.audit import timeline

    ctx = ctx_with(
        tmp_path,
        """\
      - remediate: {action: scale, endpoint: "http://actions/scale", dry_run: false, on_failure: {escalate: true}}
    """,
    )
    sim = Sim(ctx)
    effect = started(sim)
    failed = outcome(effect, "dead", at=T0 + MIN, http_status=500, error_type="TransientError")
    sim.feed(failed)
    trace = sim.trace()
    rows = {
        "events": [event for event, _, _ in trace],
        "decisions": [record for _, record, _ in trace],
        "effects": [e for _, _, effects in trace for e in effects],
    }
    entries = timeline.build(rows)
    [entry] = [e for e in entries if e["type"] == "remediation.failed"]
    assert entry["decision"]["outcome"] == "escalated"
    assert entry["decision"]["remediation"]["action"] == "scale"
    assert entry["decision"]["remediation"]["result"] == "failed"
    assert [(f["type"], f["receiver"]) for f in entry["effects"] if f["type"] == "notify"] == [
        ("notify", "oncall-slack")
    ]
    text = timeline.render("acme:alert:cpu:api", entries)
    assert "remediation.failed" in text
    assert "remediation scale failed after 2 attempt(s): gave up after 2 attempt(s): HTTP 500" in text
    assert "-> notify slack:oncall-slack trigger Escalated (remediation scale failed" in text
    assert "-> remediate  scale" in text or "-> remediate scale" in text


def test_the_audit_timeline_says_who_acted_and_what_was_inferred() -> None:
    """Issue 14: who acknowledged shows in `opsloop audit`; issue 18: so does an inferred severity."""
    from dataclasses import replace as _replace

    from streams.audit import timeline
    from streams.core.decide import Context, Verdict
    from tests.decide.helpers import MIN, T0, alert, starter_set, webhook

    inferred = Verdict(
        category="availability",
        severity="warning",
        classifier="test-1",
        severity_inferred=True,
        severity_basis="default",
        severity_confidence=0.41,
    )
    sim = Sim(Context(runbooks=starter_set(), verdict=inferred))
    sim.feed(alert(at=T0))
    sim.advance(T0 + 10 * MIN)
    sim.feed(webhook("ack", at=T0 + 11 * MIN, actor="U123 (alice)"), _replace(inferred, severity_inferred=False))
    trace = sim.trace()
    rows = {
        "events": [e for e, _, _ in trace],
        "decisions": [r for _, r, _ in trace],
        "effects": [x for _, _, effects in trace for x in effects],
    }
    text = timeline.render("acme:alert:TargetDown:api", timeline.build(rows))
    assert "acknowledged by U123 (alice)" in text
    assert "    severity inferred (default), p=0.4100\n" in text
    stated = Sim(
        Context(runbooks=starter_set(), verdict=_replace(inferred, severity_inferred=False, category_inferred=True))
    )
    stated.feed(alert(at=T0))
    stated_rows = [(e, r, x) for e, r, x in stated.trace()]
    text = timeline.render(
        "acme:alert:TargetDown:api",
        timeline.build(
            {
                "events": [e for e, _, _ in stated_rows],
                "decisions": [r for _, r, _ in stated_rows],
                "effects": [x for _, _, effects in stated_rows for x in effects],
            }
        ),
    )
    # the severity was stated: no basis or probability pinned on the inferred category
    assert "    category inferred by the classifier\n" in text and "severity inferred" not in text
