"""Outcomes feed back: a remediation's result comes back to the session and runs the step's policy.

The sink, once it has settled a live ``remediate`` effect, produces a webhook event of
the session (``agents/sinks/outcomes.py``): ``remediation.succeeded``, ``.failed`` (the
action answered an error), ``.dead`` (dead-lettered without an answer: refused, no
endpoint, a missing secret, unreachable) or ``.timed_out`` (no answer within the
timeout, the last attempt's fate unknown). Its event id derives from the effect id, so
a redelivered outcome is a duplicate. Dry runs produce none.

Here the runbook's step says what follows (``runbooks/README.md``):

- a failure runs ``on_failure``: ``escalate`` (the running chain's next step now, or
  without a running chain a message to the chain's receivers), ``notify`` a receiver,
  or ``next``: run another remediate step; then, with ``continue_on_failure``, its ``then``;
- a success runs ``then`` (the next action of a chain); nothing else.

An outcome arriving after the session stopped firing is recorded and runs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from streams.core import escalation, gates
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
from streams.model.outcomes import DEAD, FAILED, OUTCOME_TYPES, SUCCEEDED, TIMED_OUT, outcome_event_id
from streams.model.runbooks import Remediate, Runbook, fill_params

__all__ = ["OUTCOME_TYPES", "on_outcome", "outcome_event_id", "run_remediation"]

SAID = {SUCCEEDED: "succeeded", FAILED: "failed", DEAD: "was dead-lettered", TIMED_OUT: "timed out"}


def run_remediation(
    f: Fold, rb: Runbook, step: Remediate, *, params: Mapping[str, str] | None = None, requires_approval: bool = False
) -> None:
    """The remediate effect of a runbook step (with its per-action retries and timeout for the sink); the
    step's ``{labels.<name>}`` params filled from the session's lead firing alert (its target)."""
    lead = lead_of(firing_alerts(f.s))
    labels = dict(lead[1].get("labels") or {}) if lead is not None else {}
    f.remediate(
        action=step.action,
        endpoint=step.endpoint,
        method=step.method,
        params={**fill_params(step.params, labels), **(params or {})},
        dry_run=step.dry_run,
        requires_approval=requires_approval,
        runbook=rb.name,
        retries=step.retries,
        timeout_ms=step.timeout,
    )


def _body(payload: Mapping[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(payload.get("body_json") or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def on_outcome(f: Fold, etype: str, payload: Mapping[str, Any]) -> None:
    """A remediation's result came back: record it and run what its step says."""
    s = f.s
    body = _body(payload)
    action = str(body.get("action") or payload.get("subject") or "")
    effect = str(body.get("effect_id") or payload.get("delivery_id") or "")
    f.note("remediation", action)
    f.note("remediation_effect", effect)
    f.note("remediation_result", etype.removeprefix("remediation."))
    if body.get("attempts") is not None:
        f.note("remediation_attempts", body["attempts"])
    if body.get("reason"):
        f.note("remediation_reason", str(body["reason"])[:500])
    rb = runbook_named(f, str(body.get("runbook") or s.get("runbook") or ""))
    f.runbook = rb.name
    f.outcome = "remediation-succeeded" if etype == SUCCEEDED else "remediation-failed"
    found = rb.remediation(action)
    if found is None:
        f.note("remediation_step", "none (not a step of the runbook)")
        return
    _, step = found
    if s["status"] != "firing":
        f.note("remediation_step", "not run: the session is not firing")
        return
    if etype == SUCCEEDED:
        if step.then:
            _follow(f, rb, step.then, f"after {action} succeeded")
        return
    policy = step.on_failure
    if policy is not None:
        why = f"remediation {action} {SAID[etype]}"
        if policy.escalate:
            _escalate(f, rb, why, effect, body)
        elif policy.notify:
            _tell(f, rb, [policy.notify], why, effect, body, acked_stops=False)
        elif policy.next:
            _follow(f, rb, policy.next, f"after {action} {SAID[etype]}")
    if step.continue_on_failure and step.then:
        _follow(f, rb, step.then, f"after {action} {SAID[etype]} (continue_on_failure)")


def _follow(f: Fold, rb: Runbook, action: str, why: str) -> None:
    """Run the remediate step of ``action`` (a chain's next link or a fallback)."""
    found = rb.remediation(action)
    if found is None:  # the loader checks chains; a runbook changed since the effect was made
        f.note("remediation_next", f"{action}: not a step of the runbook")
        return
    index, step = found
    if step.requires_approval:
        if index not in f.s["approval"]:
            f.s["approval"].append(index)
        f.note("remediation_next", f"{action} awaits approval ({why})")
        f.outcome = "awaiting-approval"
        return
    run_remediation(f, rb, step)
    f.note("remediation_next", f"{action} ({why})")
    f.outcome = "remediating"


def _escalate(f: Fold, rb: Runbook, why: str, effect: str, body: Mapping[str, Any]) -> None:
    """The escalation chain's next step now; without a running chain, a message to its receivers."""
    s = f.s
    esc = s.get("escalation")
    if esc is not None:
        chain = runbook_named(f, esc["runbook"])
        step = esc["next"]
        if step < len(chain.escalation):
            f.cancel(f"esc:{s['episode']}:{step}", why)
            escalation.escalate(f, step, why=why)
            return
    receivers = [st.receiver for st in rb.escalation] or list(s["audience"]) or list(rb.notify_receivers)
    _tell(f, rb, receivers, why, effect, body, acked_stops=True)


def _tell(
    f: Fold,
    rb: Runbook,
    names: list[str],
    why: str,
    effect: str,
    body: Mapping[str, Any],
    *,
    acked_stops: bool,
) -> None:
    s = f.s
    firing = cast("list[tuple[str, Mapping[str, Any]]]", firing_alerts(s))
    found = lead_of(firing)
    if found is None:
        return
    lead = found[1]
    if acked_stops and s["acked"]:
        f.check(gates.Gate("ack", gates.STOP, "acknowledged"))
        f.outcome = "suppressed"
        return
    labels = alert_labels(lead, org_of(f))
    if f.check(silence_gate_of(f, labels)):
        f.outcome = "suppressed"
        return
    reason = str(body.get("reason") or "")
    extra = f"Remediation: {why}" + (f" ({reason})" if reason else "") + "."
    sent = send(
        f,
        expand_receivers(f, names, labels),
        rb=rb,
        kind="remediation-failed",
        action="trigger",
        severity=lead["severity"],
        title=f"{why[:1].upper()}{why[1:]}: {title_of(lead, len(firing))}",
        body=body_of(f, lead, firing, rb, extra=extra),
        fields=fields_of(lead, rb, len(firing)),
        links=links_of(f, lead, rb, with_ack=True, approval=bool(s.get("approval"))),
        content=effect,
        autonomous=True,
    )
    f.outcome = "notified" if sent else "suppressed"
