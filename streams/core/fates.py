"""Every event type has a fate: what happens to a webhook or scan event decide's handlers left alone.

decide's handlers (:func:`streams.core.decide._on_webhook`, ``_on_scan``) give meaning to
the types they know (acks, resolves, pull requests, ``<thing>.failed`` / ``.succeeded``,
scan statuses). An event they leave untouched (outcome still ``recorded``, no effect,
no gate) gets one of two fates here, so no type is silently dropped:

- **a runbook names its type** (``match.type``, e.g. ``agent.needs_input``): a one-shot
  *notice* through the routing tree or the runbook's receivers, with the runbook's
  ``severity`` unless the sender stated one. It passes the silence gate, the runbook's
  cooldown, the consecutive-message cap (not for ``info`` notices: no resolve or ack would
  ever reset it) and the dedupe window (the same notice again
  inside ``dedupe_window`` is a duplicate), each verdict recorded; outcome ``notified``
  or ``suppressed``. A notice starts no incident: there is nothing to resolve or escalate.
- **nothing names it and decide does not know it**: outcome ``unmatched`` (counted in
  ``opsloop_events_unmatched_total{kind}``). When ``routing.yaml`` exists, its root route's
  receiver (Alertmanager's default route) is told once per session episode, through the
  silence gate, the once-per-episode ``unmatched`` gate, the cap and the dedupe window of
  the ``default`` runbook. Without a routing file the record is all there is.

A known type a handler deliberately left as ``recorded`` (an ack when nothing fires, a
``pr.closed`` of a pull request never opened, a clean scan with nothing to clear) stays
recorded unless a runbook names that type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.core import gates
from streams.core.fold import Fold
from streams.core.gates import Gate
from streams.core.messages import (
    annotation_body,
    expand_receivers,
    org_of,
    runbook_named,
    send,
    silence_gate_of,
)
from streams.model.records import derived_id
from streams.model.routing import Routing, routing_labels
from streams.model.runbooks import Runbook, RunbookSet

UNMATCHED = "unmatched"  # the decision outcome (and the gate) of a type nothing handles
DEFAULT_RUNBOOK_NAME = "default"


def untouched(f: Fold) -> bool:
    """No handler decided anything about the event (it would be silently recorded)."""
    return f.outcome == "recorded" and not f.effects and not f.gates


def after_handlers(f: Fold, *, known: bool) -> None:
    """Give an event the handlers left untouched its fate; ``known``: decide has a meaning for its type."""
    if not untouched(f):
        return
    rb = claiming_runbook(f)
    if rb is not None:
        notice(f, rb)
    elif not known:
        unmatched(f)


def default_receiver(routing: Routing) -> str:
    """The receiver of the root route when a routing file names one ("" for the built-in routing)."""
    return routing.route.receiver if routing.path else ""


def stated(f: Fold) -> bool:
    return f.ctx.verdict.severity_basis == "stated"


def event_labels(f: Fold, severity: str) -> dict[str, str]:
    v, event = f.ctx.verdict, f.event
    return routing_labels(
        event.get("labels") or {},
        category=v.category,
        severity=severity,
        org=org_of(f),
        source=event["source"],
        kind=event["kind"],
        event_type=event["type"],
    )


def claiming_runbook(f: Fold) -> Runbook | None:
    v, event = f.ctx.verdict, f.event
    return claimed_by(f.ctx.runbooks, event_labels(f, v.severity), v.category, v.severity, event["type"], event["kind"])


def claimed_by(
    rset: RunbookSet, labels: Mapping[str, str], category: str, severity: str, event_type: str, kind: str
) -> Runbook | None:
    """The runbook that names ``event_type`` and takes the event (also what ``opsloop route test`` asks)."""
    return rset.naming(labels, category=category, severity=severity, event_type=event_type, kind=kind)


def severity_of(f: Fold, rb: Runbook) -> str:
    """The runbook's severity for its types, unless the sender stated one."""
    return rb.severity if rb.severity and not stated(f) else f.ctx.verdict.severity


# -- content ------------------------------------------------------------------------------


def _title(event: Mapping[str, Any]) -> str:
    labels, annotations = event.get("labels") or {}, event.get("annotations") or {}
    name = labels.get("alertname") or event["type"]
    summary = annotations.get("summary") or annotations.get("title") or ""
    payload = event.get("payload") or {}
    subject = payload.get("subject") if isinstance(payload, Mapping) else ""
    what = summary or (subject if subject and subject != event["session_key"] else "")
    return f"{name}: {what}" if what else str(name)


def _fields(f: Fold) -> dict[str, str]:
    event = f.event
    fields = {k: str(v) for k, v in (event.get("labels") or {}).items() if k != "alertname"}
    fields["type"] = event["type"]
    fields["source"] = event["source"]
    said = f.ctx.verdict.said()
    if said:
        fields["classified"] = said
    return fields


def _links(f: Fold, rb: Runbook) -> list[dict[str, str]]:
    payload = f.event.get("payload") or {}
    url = str(payload.get("url") or payload.get("generator_url") or "") if isinstance(payload, Mapping) else ""
    links = [{"label": "Source", "url": url}] if url else []
    if rb.url:
        links.append({"label": "Runbook", "url": rb.url})
    return links


def _content(f: Fold) -> str:
    """What makes two notices the same message (dedupe): type, title and body, not the event id."""
    event = f.event
    annotations = event.get("annotations") or {}
    return derived_id("notice", event["type"], _title(event), annotation_body(annotations))


# -- the two fates ------------------------------------------------------------------------


def notice(f: Fold, rb: Runbook) -> None:
    """A runbook names the type: tell its receivers once, through the gates."""
    s = f.s
    severity = severity_of(f, rb)
    labels = event_labels(f, severity)
    f.runbook = rb.name
    f.note("fate", "notice")
    f.note("severity", severity)
    if f.check(silence_gate_of(f, labels)):
        f.outcome = "suppressed"
        return
    if f.check(gates.cooldown_gate(s["cooldowns"].get(rb.name), f.now, rb.policy.cooldown)):
        f.outcome = "suppressed"
        return
    receivers = expand_receivers(f, rb.notify_receivers, labels)
    annotations = f.event.get("annotations") or {}
    lines = [annotation_body(annotations)]
    if rb.description:
        lines.append(f"Runbook {rb.name}: {rb.description}")
    body = "\n".join(line for line in lines if line)
    sent = send(
        f,
        receivers,
        rb=rb,
        kind="notice",
        action="trigger",
        severity=severity,
        title=_title(f.event),
        body=body,
        fields=_fields(f),
        links=_links(f, rb),
        content=_content(f),
        autonomous=severity != "info",  # info notices (work done) are not capped: nothing resets them
    )
    if not sent:
        f.outcome = "suppressed"
        return
    s["cooldowns"][rb.name] = f.now
    f.outcome = "notified"


def unmatched(f: Fold) -> None:
    """Nothing handles the type: record it as such and tell the default receiver once per episode."""
    s, etype = f.s, f.event["type"]
    f.outcome = UNMATCHED
    f.note(UNMATCHED, etype)
    receiver = default_receiver(f.ctx.runbooks.routing)
    if not receiver:
        f.note("fate", "unmatched, recorded (routing.yaml names no default receiver)")
        return
    f.note("fate", f"unmatched -> default receiver {receiver}")
    rb = runbook_named(f, DEFAULT_RUNBOOK_NAME)
    f.runbook = rb.name
    severity = f.ctx.verdict.severity
    if f.check(silence_gate_of(f, event_labels(f, severity))):
        return
    episode = s["episode"]
    if s.get("unmatched_told") == episode:
        f.check(Gate(UNMATCHED, gates.STOP, f"{receiver} was told of unmatched events in episode {episode}"))
        return
    f.check(Gate(UNMATCHED, gates.PASS, f"first unmatched event of episode {episode}"))
    sent = send(
        f,
        [receiver],
        rb=rb,
        kind=UNMATCHED,
        action="trigger",
        severity=severity,
        title=f"Unmatched event type {etype}: {_title(f.event)}",
        body=(
            f"No runbook or built-in handler takes events of type {etype!r}; the default receiver "
            "hears of it once per episode of this session. Name the type in a runbook's match.type "
            "to decide what it means (opsloop route test type=...)."
        ),
        fields=_fields(f),
        links=_links(f, rb),
        content=etype,
        autonomous=True,
    )
    if sent:
        s["unmatched_told"] = episode
