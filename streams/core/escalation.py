"""Escalation and verification: the chain of a runbook, step by step, until someone acknowledges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from streams.core import gates
from streams.core.fold import Fold
from streams.core.messages import (
    alert_labels,
    body_of,
    expand_receivers,
    fields_of,
    firing_alerts,
    lead_of,
    links_of,
    org_of,
    runbook_named,
    send,
    silence_gate_of,
    title_of,
)


def escalate(f: Fold, step: int, why: str = "unacknowledged") -> None:
    s = f.s
    esc = s.get("escalation")
    if s["status"] != "firing" or esc is None:
        f.outcome = "stale-timer"
        return
    rb = runbook_named(f, esc["runbook"])
    f.runbook = rb.name
    if s["acked"]:
        f.check(gates.Gate("ack", "stop", "acknowledged"))
        f.outcome = "suppressed"
        return
    if step >= len(rb.escalation):
        f.outcome = "recorded"
        return
    # firing_alerts gives dicts, body_of reads them as mappings; a firing session has a lead alert.
    firing = cast("list[tuple[str, Mapping[str, Any]]]", firing_alerts(s))
    _, lead = cast("tuple[str, Mapping[str, Any]]", lead_of(firing))
    labels = alert_labels(lead, org_of(f))
    if f.check(gates.flapping_gate(s["flap"]["on"], s["flap"]["last"], f.now, rb.policy.flapping)):
        f.outcome = "flapping"
        return
    if not rb.escalates(lead["severity"]):
        # The urgent alert that started the chain resolved and a warning of the session still fires: the
        # step is not taken (etcd's mixin: on-call and PagerDuty were escalated to about a warning); a
        # later step finds out again, should an urgent alert fire by then.
        why_not = f"the most severe alert firing is {lead['severity']}, below escalate_from {rb.policy.escalate_from}"
        f.check(gates.Gate("severity", gates.STOP, why_not))
        f.outcome = "suppressed"
    elif f.check(silence_gate_of(f, labels)):
        f.outcome = "suppressed"
    else:
        f.check(gates.Gate("ack", "pass", "not acknowledged"))
        chain = rb.escalation[step]
        receivers = expand_receivers(f, [chain.receiver], labels)
        minutes = (f.now - esc["start"]) // 60000
        sent = send(
            f,
            receivers,
            rb=rb,
            kind=f"escalation-{step}",
            action="trigger",
            severity=lead["severity"],
            title=f"Escalated ({why} for {minutes}m): {title_of(lead, len(firing))}",
            body=body_of(f, lead, firing, rb),
            fields=fields_of(lead, rb, len(firing)),
            links=links_of(f, lead, rb, with_ack=True, approval=bool(s.get("approval"))),
            content=str(step),
            autonomous=True,
        )
        f.outcome = "escalated" if sent else "suppressed"
    f.note("escalation_step", step)
    esc["next"] = step + 1
    if step + 1 < len(rb.escalation):
        f.schedule(
            f"esc:{s['episode']}:{step + 1}", esc["start"] + rb.escalation[step + 1].after, "escalation", step=step + 1
        )


def verify(f: Fold) -> None:
    """After a remediation: still firing means it did not help; escalate now."""
    s = f.s
    if s["status"] != "firing" or s["acked"]:
        f.outcome = "verified" if s["status"] != "firing" else "recorded"
        return
    esc = s.get("escalation")
    found = lead_of(firing_alerts(s))
    remediated_by = esc["runbook"] if esc is not None else found[1]["runbook"] if found is not None else ""
    if runbook_named(f, remediated_by).only_dry_runs:
        # Nothing was changed: "still firing after remediation" paged PagerDuty 15 minutes early about a Ceph
        # health error a dry-run log rotation was "run" for. The chain goes on at its own times.
        f.note("verify", "the remediations were dry runs: nothing to verify")
        f.outcome = "recorded"
        return
    if esc is not None:
        rb = runbook_named(f, esc["runbook"])
        step = esc["next"]
        if step < len(rb.escalation):
            f.cancel(f"esc:{s['episode']}:{step}", "verification failed")
            escalate(f, step, why="still firing after remediation")
            return
    if found is None:
        return
    lead = found[1]
    rb = runbook_named(f, lead["runbook"])
    f.runbook = rb.name
    if f.check(silence_gate_of(f, alert_labels(lead, org_of(f)))):
        f.outcome = "suppressed"
        return
    sent = send(
        f,
        list(s["audience"]),
        rb=rb,
        kind="verify",
        action="trigger",
        severity=lead["severity"],
        title=f"Still firing after remediation: {lead['title']}",
        body=body_of(f, lead, cast("list[tuple[str, Mapping[str, Any]]]", firing_alerts(s)), rb),
        fields=fields_of(lead, rb, 1),
        links=links_of(f, lead, rb, with_ack=True),
        content="verify",
        autonomous=True,
    )
    f.outcome = "escalated" if sent else "suppressed"
