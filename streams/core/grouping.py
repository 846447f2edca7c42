"""Grouping and the group notification: when a session's message goes out, and the gates it passes.

A group flush (the ``grp:`` timer, or a trigger past its group_wait) runs the gates of
:data:`FLUSH_GATES` in order, then sends one message for the alerts no gate muted and
starts what follows a first message (remediations, the verification timer, the
escalation chain).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streams.core import gates
from streams.core.fold import Fold
from streams.core.gates import Gate
from streams.core.inhibition import IndexedSources, as_index
from streams.core.messages import (
    alert_labels,
    body_of,
    expand_receivers,
    fields_of,
    firing_alerts,
    group_count,
    group_wait,
    lead_of,
    links_of,
    org_of,
    route_of,
    runbook_named,
    send,
    silence_gate_of,
    title_of,
)
from streams.core.outcomes import run_remediation
from streams.core.state import AlertState
from streams.core.timers import timer_event_id
from streams.model.records import POST_ANNOTATION, derived_id
from streams.model.routing import Timing
from streams.model.runbooks import Runbook

GROUP_PREFIX = "grp:"
TRIGGER_KINDS = ("initial", "repeat")  # kinds a runbook's cooldown applies to


def schedule_flush(f: Fold, rb: Runbook, labels: Mapping[str, str], alert: Mapping[str, Any]) -> None:
    s = f.s
    timing = route_of(f, labels).timing
    if s["group"]["sent"] is None:
        due = (s["group"]["first"] or f.now) + group_wait(f, alert, labels)
    else:
        due = s["group"]["sent"] + timing.group_interval
    timer_id = f"{GROUP_PREFIX}{s['episode']}"
    if due <= f.now and _more_of_the_post(f):
        due = f.now + POST_HOLD_MS  # not due before the post's next alert is folded (timers due go first)
    if due <= f.now:
        # The group's timer would have fired at ``due``: this is its flush, so its effects take
        # the ids that timer's event gives them, whichever event happens to carry it (a
        # re-decision after a lost state write may see the ticker's timer event do it).
        with f.carried_by(timer_event_id(f.event["session_key"], timer_id, due)):
            flush(f)
        return
    f.schedule(timer_id, due, "group")
    if f.outcome in ("recorded", "repeat"):
        f.outcome = "grouped"


POST_HOLD_MS = 1000  # the longest a held message waits for the rest of its Alertmanager post


def _more_of_the_post(f: Fold) -> bool:
    """Alertmanager posted more of this session's alerts with this one (ingest's ``opsloop_post``, ``i/n`` with i <
    n): hold the message for the last of them, so one message tells the group Alertmanager sent; the group's timer
    (due already) tells them at the ticker's next pass should that one never come."""
    place, _, total = str((f.event.get("annotations") or {}).get(POST_ANNOTATION, "")).partition("/")
    return place.isdigit() and total.isdigit() and int(place) < int(total)


@dataclass
class Pending:
    """The group notification a flush is about to send, narrowed by each gate in turn."""

    firing: list[tuple[str, AlertState]]  # every firing alert of the session
    notifiable: list[tuple[str, AlertState]]  # those no gate has muted (yet)
    rb: Runbook
    timing: Timing
    kind: str = ""  # initial | update | repeat, once the alerts to send are known
    content: str = ""  # a hash of the notified alert keys
    until: list[int] = field(default_factory=list)  # when each muted alert may be notified again


@dataclass(frozen=True)
class FlushGate:
    """One gate of a group flush: its check, and what a stop means for the session."""

    check: Callable[[Fold, Pending], Gate | None]  # None: the gate does not apply to this flush
    outcome: str  # the decision's outcome when it stops the flush
    reschedule: bool  # a stop postpones (try again at the gate's ``until``) rather than drops


def _flapping(f: Fold, p: Pending) -> Gate:
    flap = f.s["flap"]
    return gates.flapping_gate(flap["on"], flap["last"], f.now, p.rb.policy.flapping)


def _per_alert(
    f: Fold, p: Pending, name: str, verdict_of: Callable[[Mapping[str, Any]], Gate], noun: str, *, last: bool
) -> Gate:
    """A gate that mutes alerts one by one (``verdict_of`` each alert's state), as Alertmanager does. Its
    record says how many it muted (verdict ``stop`` if any); the ``last`` of these gates halts the flush
    when no alert is left, to be tried again when the first muted alert may be notified."""
    kept, causes = [], []
    for key, alert in p.notifiable:
        gate = verdict_of(alert)
        if gate.stopped:
            p.until.append(gate.until if gate.until is not None else f.now + p.timing.group_interval)
            causes.append(gate)
            f.note(name, gate.reason)
            continue
        kept.append((key, alert))
    muted = len(p.notifiable) - len(kept)
    p.notifiable = kept
    halts = last and not kept
    return Gate(
        name,
        gates.STOP if muted else gates.PASS,
        f"{muted} of {len(p.firing)} {noun}",
        until=min(p.until) if halts and p.until else None,
        cause=tuple(causes),
        halts=halts,
    )


def _silences_gate(f: Fold, p: Pending) -> Gate:
    """Alerts a silence mutes are tried again at the silence's end or, sooner, after the group interval, as
    Alertmanager flushes a group every group interval: a silence expired early (the maintenance done) ends
    there, and without the sooner try its alerts waited for the silence's original end (hours) to be told."""
    recheck, org = f.now + p.timing.group_interval, org_of(f)

    def verdict(alert: Mapping[str, Any]) -> Gate:
        gate = silence_gate_of(f, alert_labels(alert, org), alert.get("arrived", 0))
        if gate.stopped and gate.until is not None and gate.until > recheck:
            return replace(gate, until=recheck)
        return gate

    return _per_alert(f, p, "silence", verdict, "silenced", last=False)


def _inhibition_gate(f: Fold, p: Pending) -> Gate:
    org, session = org_of(f), f.event["session_key"]
    rules = f.ctx.runbooks.routing.inhibit_rules
    if not rules:
        return _per_alert(f, p, "inhibit", lambda alert: Gate("inhibit", gates.PASS), "inhibited", last=True)
    # other sessions' inhibiting alerts (from the context, looked up by their equal labels) and this session's own
    sources = IndexedSources(as_index(f.ctx.inhibitors, rules), session, [alert_labels(a, org) for _, a in p.firing])

    def verdict_of(alert: Mapping[str, Any]) -> Gate:
        labels = alert_labels(alert, org)
        found = sources.find(labels, rules)
        if found is None:
            return Gate("inhibit", gates.PASS)
        index, key, source = found
        # from another session: an outside input to record; from this one: the state has it
        return gates.inhibited(labels, rules, index, source, cause=None if key is None else (key, source))

    return _per_alert(f, p, "inhibit", verdict_of, "inhibited", last=True)


def _group_gate(f: Fold, p: Pending) -> Gate:
    s = f.s
    p.content = derived_id("content", *(k for k, _ in p.notifiable))
    if s["group"]["sent"] is None:
        p.kind = "initial"
    else:
        p.kind = "update" if p.content != s["group"]["hash"] else "repeat"
    found = lead_of(p.firing)
    assert found is not None
    lead = found[1]
    return gates.group_gate(
        p.kind,
        first_seen=s["group"]["first"] or 0,
        last_sent=s["group"]["sent"],
        now=f.now,
        timing=p.timing,
        wait=group_wait(f, lead, alert_labels(lead, org_of(f))),
    )


def _cooldown_gate(f: Fold, p: Pending) -> Gate | None:
    """A runbook's cooldown holds a new episode's message (a warning that resolves and fires again is told when it
    ends); not an urgent alert's: Ceph's OSD full, resolved then firing again, reached no one for 27 minutes of a
    30-minute cooldown while on-call's last word was "resolved". Flapping has its own gate."""
    if p.kind not in TRIGGER_KINDS:
        return None
    found = lead_of(p.notifiable)
    if found is not None and found[1].get("severity") == "urgent":
        return gates.Gate("cooldown", gates.PASS, "urgent: not held by a cooldown")
    return gates.cooldown_gate(f.s["cooldowns"].get(p.rb.name), f.now, p.rb.policy.cooldown)


# The gates of a group flush, in order. A gate is one function here: it reads the
# session and the pending notification, may narrow the alerts to send, and answers a
# Gate; flush records every verdict and stops at the first that halts it. The cap and
# the dedupe window apply per message when it is sent (:func:`_send`).
FLUSH_GATES: tuple[FlushGate, ...] = (
    FlushGate(_flapping, outcome="flapping", reschedule=False),
    FlushGate(_silences_gate, outcome="suppressed", reschedule=True),
    FlushGate(_inhibition_gate, outcome="suppressed", reschedule=True),
    FlushGate(_group_gate, outcome="grouped", reschedule=True),
    FlushGate(_cooldown_gate, outcome="suppressed", reschedule=True),
)


def flush(f: Fold) -> None:
    """Send the group's notification if the gates let it; otherwise say when to try again."""
    s = f.s
    if s["status"] != "firing":
        f.outcome = "stale-timer"
        return
    firing = firing_alerts(s)
    found = lead_of(firing)
    if found is None:
        return
    rb = runbook_named(f, found[1]["runbook"])
    f.runbook = rb.name
    pending = Pending(
        firing=firing, notifiable=list(firing), rb=rb, timing=route_of(f, alert_labels(found[1], org_of(f))).timing
    )
    for step in FLUSH_GATES:
        gate = step.check(f, pending)
        if gate is None or not f.check(gate):
            continue
        if step.reschedule and gate.until is not None:
            f.schedule(f"grp:{s['episode']}", gate.until, "group")
        f.outcome = step.outcome
        return
    _notify_group(f, pending)


def _notify_group(f: Fold, p: Pending) -> None:
    """The group's message went through every gate: send it, and start what follows a first one."""
    s, rb, kind = f.s, p.rb, p.kind
    found = lead_of(p.notifiable)
    assert found is not None
    lead = found[1]
    lead_labels = alert_labels(lead, org_of(f))
    if kind == "initial":
        if rb.escalates(lead["severity"]):
            receivers = expand_receivers(f, [rb.escalation[0].receiver], lead_labels)
        else:
            receivers = expand_receivers(f, rb.notify_receivers, lead_labels)
    else:
        receivers = list(s.get("first_audience") or s["audience"]) or expand_receivers(
            f, rb.notify_receivers, lead_labels
        )
    sent_at = notice_time(f, p.notifiable)
    awaits = bool(s.get("approval")) or (kind == "initial" and any(r.requires_approval for r in rb.remediations))
    extra = "Remediation awaits approval." if awaits else ""
    sent = send(
        f,
        receivers,
        rb=rb,
        kind=kind,
        action="trigger",
        severity=lead["severity"],
        title=title_of(lead, group_count(f, p.notifiable)),
        body=body_of(f, lead, p.notifiable, rb, extra),
        fields=fields_of(lead, rb, group_count(f, p.notifiable)),
        links=links_of(f, lead, rb, with_ack=True, approval=awaits, sent_at=sent_at),
        content=p.content,
        autonomous=True,
    )
    # The news is out (or was stopped by the cap/dedupe): either way this content is settled.
    s["group"]["hash"] = p.content
    if not sent:
        f.outcome = "suppressed"
        return
    f.outcome = "notified"
    s["group"]["sent"] = sent_at
    s["alerts"] = {k: a for k, a in s["alerts"].items() if a["status"] == "firing"}
    if kind in TRIGGER_KINDS:
        s["cooldowns"][rb.name] = sent_at
    if kind == "initial":
        s["first_audience"] = list(sent)
        after_first_notification(f, rb, lead, sent_at)
    f.schedule(f"grp:{s['episode']}", sent_at + p.timing.repeat_interval, "group")


def notice_time(f: Fold, alerts: list[tuple[str, AlertState]]) -> int:
    """When a group's message goes out, as far as decide can tell: the session's time or, when later, the
    arrival of the newest alert it tells of (``arrived``, ingest's clock recorded in the event).

    Why: what follows a message (the repeat, the cooldown, the escalation chain, the verification) counts
    from when people were told. An alert can reach opsloop long after its ``startsAt`` (Prometheus re-sends
    its firing alerts with their first startsAt after opsloop or the network was down; a new opsloop meets
    alerts firing for hours), and its group's message, timed at startsAt + group wait, went out on arrival
    with the repeat, the escalation steps and the cooldown already past: tried from outside, an alert firing
    for 6 h gave the chat message, the on-call escalation "unacknowledged for 15m", the PagerDuty page and
    a repeat within 2.5 s of each other. Alertmanager, likewise, counts its repeat interval from when it sent.
    A timer's own arrival is not used: whether the ticker fired it promptly or a later event folded it must
    not change what it decides (:func:`streams.core.messages.arrival`).
    """
    return max([f.now, *(int(alert.get("arrived") or 0) for _, alert in alerts)])


def after_first_notification(f: Fold, rb: Runbook, lead: Mapping[str, Any], start: int) -> None:
    """Remediation steps, the verification timer and the escalation chain start with the first message
    (``start``: when it went out, :func:`notice_time`)."""
    s = f.s
    ep = s["episode"]
    follow_ups = rb.follow_ups  # chained steps run after another one's outcome (streams.core.outcomes)
    for index, step in enumerate(rb.remediations):
        if step.action in follow_ups:
            continue
        if step.requires_approval:
            s["approval"].append(index)
            continue
        run_remediation(f, rb, step)
    if rb.verify is not None:
        f.schedule(f"verify:{ep}", start + rb.verify.after, "verify")
    if rb.escalates(lead["severity"]) and len(rb.escalation) > 1:
        s["escalation"] = {"runbook": rb.name, "start": start, "next": 1}
        f.schedule(f"esc:{ep}:1", start + rb.escalation[1].after, "escalation", step=1)
