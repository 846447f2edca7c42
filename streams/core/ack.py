"""A human answers: an acknowledgement stops the chain, an approval runs the remediations waiting for it."""

from __future__ import annotations

from streams.core.fold import Fold
from streams.core.messages import firing_alerts, lead_of, policy_runbook, reset_cap, runbook_named, send
from streams.core.outcomes import run_remediation


def on_ack(f: Fold, *, actor: str, source: str) -> None:
    """A human took it: stop the chain, reset the cap, and tell PagerDuty if it did not come from there."""
    s = f.s
    reset_cap(f, "ack")
    reset_cap(f, "human")
    if s["status"] != "firing":
        f.outcome = "recorded"
        return
    if s["acked"]:
        f.outcome = "repeat"
        return
    s["acked"] = True
    f.note("acked_by", actor or source)
    f.cancel("esc:", f"acknowledged by {actor or source}")
    f.cancel("verify:", "acknowledged")
    rb = policy_runbook(f)
    f.runbook = rb.name
    f.outcome = "acknowledged"
    if source == "pagerduty":
        return
    pd = [r for r in s["audience"] if f.ctx.runbooks.routing.channel_of(r) == "pagerduty"]
    if pd:
        found = lead_of(firing_alerts(s))
        lead = found[1] if found else {"title": f.event["session_key"], "labels": {}}
        send(
            f,
            pd,
            rb=rb,
            kind="ack",
            action="acknowledge",
            severity="info",
            title=f"Acknowledged by {actor or source}: {lead['title']}",
            body="",
            fields={},
            links=[],
            content="ack",
            autonomous=False,
        )


def on_approval(f: Fold, actor: str) -> None:
    s = f.s
    reset_cap(f, "human")
    if s["status"] != "firing" or not s.get("approval"):
        f.outcome = "recorded"
        return
    found = lead_of(firing_alerts(s))
    rb = runbook_named(f, found[1]["runbook"]) if found else policy_runbook(f)
    f.runbook = rb.name
    steps = rb.remediations
    for index in s["approval"]:
        if index < len(steps):
            run_remediation(f, rb, steps[index], params={"approved_by": actor}, requires_approval=True)
    s["approval"] = []
    f.note("approved_by", actor)
    f.outcome = "remediating"


def on_rejection(f: Fold, actor: str) -> None:
    """A human said no: the remediations waiting for approval are dropped (the alert keeps its course)."""
    s = f.s
    reset_cap(f, "human")
    if s["status"] != "firing" or not s.get("approval"):
        f.outcome = "recorded"
        return
    f.runbook = policy_runbook(f).name
    f.note("rejected_by", actor)
    f.note("rejected_steps", ",".join(str(i) for i in s["approval"]))
    s["approval"] = []
    f.outcome = "rejected"
