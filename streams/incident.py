"""A session's incident life cycle: grouping, notification, escalation, ack, resolve, flapping.

Everything here folds one event into the session state held by a :class:`Fold`
(no I/O, time is the event's). The state's shape is :class:`streams.state.SessionState`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from streams import policy as gates
from streams.effects import Fold
from streams.records import derived_id
from streams.policy import Gate
from streams.routing import SEVERITIES, RouteMatch, Timing, routing_labels
from streams.runbooks import ROUTE_RECEIVER, Runbook
from streams.state import AlertState

SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MAX_ALERTS = 200  # per session; beyond this new alerts are counted, not stored
MAX_LISTED = 10  # alerts listed in a message body
TRIGGER_KINDS = ("initial", "repeat")  # kinds a runbook's cooldown applies to


# -- helpers ----------------------------------------------------------------------------


def alert_labels(alert: Mapping[str, Any], org: str) -> dict[str, str]:
    return routing_labels(alert.get("labels") or {}, category=alert["category"], severity=alert["severity"], org=org,
                          source=alert.get("source", ""), kind=alert.get("kind", ""), event_type=alert.get("type", ""))


def firing_labels(s: Mapping[str, Any], org: str) -> list[dict[str, str]]:
    """Routing labels of the session's firing alerts (what inhibit rules match on)."""
    return [alert_labels(a, org) for _, a in firing_alerts(s)]


def firing_alerts(s: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(((k, a) for k, a in s["alerts"].items() if a["status"] == "firing"), key=lambda ka: ka[0])


def lead_of(alerts: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[str, Mapping[str, Any]] | None:
    """The alert that speaks for the group: most severe, then oldest."""
    best = None
    for key, alert in alerts:
        rank = (-SEV_RANK.get(alert["severity"], 1), alert.get("first", 0), key)
        if best is None or rank < best[0]:
            best = (rank, key, alert)
    return None if best is None else (best[1], best[2])


def _org(f: Fold) -> str:
    return f.event.get("org", "default")


def _runbook(f: Fold, name: str) -> Runbook:
    return f.ctx.runbooks.get(name)


def route_of(f: Fold, labels: Mapping[str, str]) -> RouteMatch:
    """The first route ``labels`` reach (its timing governs the group); cached for the fold."""
    key = tuple(sorted(labels.items()))
    found = f.routes.get(key)
    if found is None:
        found = f.routes[key] = f.ctx.runbooks.routing.match(labels)[0]
    return found


def expand_receivers(f: Fold, names: Iterable[str], labels: Mapping[str, str]) -> list[str]:
    """Receiver names with ``route`` replaced by what the routing tree answers for ``labels``."""
    out: list[str] = []
    for name in names:
        for receiver in (f.ctx.runbooks.routing.receivers_for(labels) if name == ROUTE_RECEIVER else [name]):
            if receiver not in out:
                out.append(receiver)
    return out


def _policy_runbook(f: Fold) -> Runbook:
    return _runbook(f, f.s.get("runbook") or "")


def reset_cap(f: Fold, cause: str) -> None:
    rb = _policy_runbook(f)
    if gates.resets_cap(rb.policy.reset_on, cause) and f.s["consecutive"]:
        f.note("cap_reset", cause)
        f.s["consecutive"] = 0


def _wait(f: Fold, alert: Mapping[str, Any], labels: Mapping[str, str]) -> int:
    """group_wait for a new alert: only telemetry from a source that does not group is held."""
    timing = route_of(f, labels).timing
    if alert.get("kind") != "telemetry":
        return 0
    return timing.wait_for(alert.get("source", ""))


# -- content ----------------------------------------------------------------------------


def _title(alert: Mapping[str, Any], count: int) -> str:
    more = f" (+{count - 1} more)" if count > 1 else ""
    return f"{alert['title']}{more}"


def _body(f: Fold, lead: Mapping[str, Any], alerts: list[tuple[str, Mapping[str, Any]]], rb: Runbook, extra: str = "") -> str:
    lines = [lead.get("body") or ""]
    if len(alerts) > 1:
        lines.append(f"{len(alerts)} alerts firing:")
        for _, a in alerts[:MAX_LISTED]:
            where = a["labels"].get("instance") or a["labels"].get("service") or ""
            lines.append(f"- {a['title']}" + (f" ({where})" if where and where not in a["title"] else ""))
        if len(alerts) > MAX_LISTED or f.s.get("overflow"):
            lines.append(f"... and {len(alerts) - min(len(alerts), MAX_LISTED) + f.s.get('overflow', 0)} more")
    if rb.description:
        lines.append(f"Runbook {rb.name}: {rb.description}")
    if extra:
        lines.append(extra)
    return "\n".join(line for line in lines if line)


def _fields(lead: Mapping[str, Any], rb: Runbook, count: int) -> dict[str, str]:
    # The runbook is the effect's own ``runbook``; every formatter shows it from there (not as a field too).
    fields = {k: v for k, v in (lead.get("labels") or {}).items() if k not in ("alertname",)}
    if count > 1:
        fields["alerts"] = str(count)
    return fields


def _links(f: Fold, lead: Mapping[str, Any], rb: Runbook, with_ack: bool, approval: bool = False) -> list[dict[str, str]]:
    """Acknowledge (and Approve / Reject while a remediation waits) as signed one-use links, then Source and Runbook."""
    links = []
    ctx = f.ctx
    if with_ack and ctx.ack_base_url and ctx.ack_secret:
        from streams.acklinks import action_link, link_id

        expires, session, org = f.now + ctx.ack_ttl_ms, f.event["session_key"], _org(f)
        actions = [("Acknowledge", "ack")] + ([("Approve", "approve"), ("Reject", "reject")] if approval else [])
        for label, action in actions:
            url = action_link(ctx.ack_base_url, session, action, expires, ctx.ack_secret,
                              jti=link_id(f.event["event_id"], session, action), org=org)
            links.append({"label": label, "url": url})
    if lead.get("url"):
        links.append({"label": "Source", "url": lead["url"]})
    if rb.url:
        links.append({"label": "Runbook", "url": rb.url})
    return links


def dedupe_key(f: Fold, receiver: str, action: str, kind: str, content: str) -> str:
    """Same session, receiver, action, episode and content: the same message.

    A group's first message, its updates and repeats all say "these alerts fire", so
    they share one kind here: the same alert set is not re-sent inside the window.
    """
    kind = "group" if kind in ("initial", "update", "repeat") else kind
    return derived_id("dedupe", f.event["session_key"], receiver, action, kind, str(f.s["episode"]), content)


def _send(f: Fold, receivers: list[str], *, rb: Runbook, kind: str, action: str, severity: str, title: str,
          body: str, fields: Mapping[str, str], links: list[dict[str, str]], content: str, autonomous: bool) -> list[str]:
    """Fan one message out to receivers through the dedupe gate (and the cap, once, when autonomous)."""
    pol = rb.policy
    f.s["dedupe"] = gates.prune_dedupe(f.s["dedupe"], f.now, pol.dedupe_window)
    if autonomous and f.check(gates.cap_gate(f.s["consecutive"], pol.max_consecutive)):
        return []
    sent = []
    for receiver in receivers:
        key = dedupe_key(f, receiver, action, kind, content)
        gate = gates.dedupe_gate(f.s["dedupe"], key, f.now, pol.dedupe_window)
        if gate.stopped:
            f.check(gates.Gate(gate.gate, gate.verdict, f"{receiver}: {gate.reason}"))
            continue
        f.notify(channel=f.ctx.runbooks.routing.channel_of(receiver), receiver=receiver, severity=severity, title=title,
                 body=body, fields=fields, links=links, dedupe_key=key, action=action, runbook=rb.name)
        f.s["dedupe"][key] = f.now
        sent.append(receiver)
    if sent:
        f.check(gates.Gate("dedupe", gates.PASS, ",".join(sent)))
        if autonomous:
            f.s["consecutive"] += 1
        for receiver in sent:
            if receiver not in f.s["audience"]:
                f.s["audience"].append(receiver)
        f.note("receivers", ",".join(sent))
        f.note("notification", kind)
        f.note("episode", f.s["episode"])
    return sent


# -- triggers and clears ----------------------------------------------------------------


def on_trigger(f: Fold, akey: str, alert: dict[str, Any]) -> None:
    """An alert (or a scan finding, a pull request, a condition) starts or keeps firing."""
    s = f.s
    f.note("alert", akey)
    current = s["alerts"].get(akey)
    if current is not None and current["status"] == "firing":
        f.outcome = "repeat"  # Prometheus re-sends firing alerts; nothing new to say
        return
    if current is None and len(s["alerts"]) >= MAX_ALERTS:
        s["overflow"] = s.get("overflow", 0) + 1
        f.outcome = "overflow"
        return
    rb = _runbook(f, alert["runbook"])
    f.runbook = rb.name
    if s["status"] != "firing":
        _status_change(f, "firing", rb)
        if not s["flap"]["on"]:
            s["episode"] += 1
            s["group"] = {"first": f.now, "sent": None, "hash": None}
            s["audience"], s["first_audience"], s["acked"], s["escalation"], s["approval"] = [], [], False, None, []
            s["runbook"] = rb.name
            s["alerts"] = {k: a for k, a in s["alerts"].items() if a["status"] == "firing"}
        s["status"] = "firing"
    alert.update(status="firing", at=f.now, first=(current or {}).get("first", f.now))
    s["alerts"][akey] = alert
    f.note("episode", s["episode"])
    if s["flap"]["on"]:
        if _flap_notice(f, rb):
            return
        f.outcome = "flapping"
        return
    labels = alert_labels(alert, _org(f))
    f.note("route", route_of(f, labels).path)
    _schedule_flush(f, rb, labels, alert)


def on_clear(f: Fold, akey: str, *, cause: str = "resolve", echo_to: str = "") -> None:
    """An alert stops firing; when the last one does, the session resolves."""
    s = f.s
    f.note("alert", akey)
    alert = s["alerts"].get(akey)
    if alert is None or alert["status"] != "firing":
        f.outcome = "recorded"
        return
    alert.update(status="resolved", at=f.now)
    f.cancel(f"ends:{akey}", cause)
    f.runbook = s.get("runbook") or alert["runbook"]
    if firing_alerts(s):
        f.outcome = "grouped"
        _schedule_flush(f, _runbook(f, f.runbook), alert_labels(alert, _org(f)), alert)
        return
    resolve_session(f, cause=cause, skip_channel=echo_to)


def resolve_session(f: Fold, *, cause: str, skip_channel: str = "") -> None:
    """Everything stopped firing (or a human resolved it): stop timers, say so to whoever was told."""
    s = f.s
    rb = _policy_runbook(f)
    f.runbook = rb.name
    for alert in s["alerts"].values():
        if alert["status"] == "firing":
            alert.update(status="resolved", at=f.now)
    was_firing = s["status"] == "firing"
    if was_firing:
        _status_change(f, "resolved", rb)
    s["status"] = "resolved"
    for prefix in ("grp:", "esc:", "verify:", "ends:"):
        f.cancel(prefix, cause)
    reset_cap(f, "resolve")
    if cause == "human":
        reset_cap(f, "human")
    s["escalation"], s["approval"] = None, []
    if not was_firing:
        f.outcome = "recorded"
        return
    if s["flap"]["on"]:
        # It stopped firing: a pager's incident closes now (a flapping notice is never a page).
        _send_resolved(f, rb, skip_channel, only_channel="pagerduty")
        if not _flap_notice(f, rb):
            f.check(gates.flapping_gate(True, s["flap"]["last"], f.now, rb.policy.flapping))
            f.outcome = "flapping"
        return
    if not s["audience"]:
        f.outcome = "resolved-quietly"  # resolved within group_wait, before anyone was told
        s["alerts"] = {}
        return
    _send_resolved(f, rb, skip_channel)
    s["alerts"] = {}


def _send_resolved(f: Fold, rb: Runbook, skip_channel: str = "", only_channel: str = "") -> None:
    s = f.s
    alerts = sorted(s["alerts"].items())
    found = lead_of(alerts)
    if found is None:
        return
    lead = found[1]
    channel_of = f.ctx.runbooks.routing.channel_of
    receivers = [r for r in s["audience"] if channel_of(r) != skip_channel and (not only_channel or channel_of(r) == only_channel)]
    if not receivers and only_channel:
        return
    title = f"Resolved: {_title(lead, len(alerts))}"
    sent = _send(f, receivers, rb=rb, kind="resolve", action="resolve", severity="info", title=title,
                 body=f"{lead['title']} is no longer firing.", fields=_fields(lead, rb, len(alerts)),
                 links=_links(f, lead, rb, with_ack=False), content="resolve", autonomous=False)
    f.outcome = "resolved" if sent else "suppressed"


def _status_change(f: Fold, to: str, rb: Runbook) -> None:
    flap = f.s["flap"]
    pol = rb.policy.flapping
    flap["flips"] = gates.record_flip(flap["flips"], f.now, pol)
    flap["last"] = f.now
    if flap["on"]:
        f.schedule("flap", f.now + pol.stable_for, "flap")
    elif gates.is_flapping(flap["flips"], f.now, pol):
        flap["on"], flap["noticed"] = True, False
        f.note("flapping", f"{len(flap['flips'])} changes in {pol.window // 1000}s")
        f.cancel("grp:", "flapping")
        f.cancel("esc:", "flapping")
        f.schedule("flap", f.now + pol.stable_for, "flap")


def _flap_notice(f: Fold, rb: Runbook) -> bool:
    """The one notice that a session is flapping; True when it went out."""
    s = f.s
    if s["flap"]["noticed"]:
        return False
    s["flap"]["noticed"] = True
    firing = firing_alerts(s) or sorted(s["alerts"].items())
    found = lead_of(firing)
    if found is None:
        return False
    lead = found[1]
    labels = alert_labels(lead, _org(f))
    if f.check(_silence_gate(f, labels)):
        return False
    receivers = s["audience"] or expand_receivers(f, rb.notify_receivers, labels)
    if s["status"] != "firing":  # noticed as it resolves: tell the people, never trigger a pager
        receivers = [r for r in receivers if f.ctx.runbooks.routing.channel_of(r) != "pagerduty"]
    pol = rb.policy.flapping
    sent = _send(f, receivers, rb=rb, kind="flapping", action="trigger", severity="warning",
                 title=f"Flapping: {lead['title']}",
                 body=(f"{len(s['flap']['flips'])} status changes within {pol.window // 60000}m. "
                       f"Quiet until it has been stable for {pol.stable_for // 60000}m."),
                 fields=_fields(lead, rb, len(firing)), links=_links(f, lead, rb, with_ack=True),
                 content=str(s["flap"]["last"]), autonomous=True)
    f.outcome = "flapping-notice" if sent else "suppressed"
    return bool(sent)


def _silences(f: Fold):
    return (*f.ctx.runbooks.maintenance, *f.ctx.silences)


SESSION_LABEL = "opsloop_session"  # what a silence made from a message ("silence 1h") matches on


def _silence_gate(f: Fold, labels: Mapping[str, str]) -> Gate:
    """Silences match the routing labels plus the session key (so a silence can name one session)."""
    return gates.silence_gate(_silences(f), {**labels, SESSION_LABEL: f.event["session_key"]}, f.now)


# -- grouping and the group notification ------------------------------------------------


def _schedule_flush(f: Fold, rb: Runbook, labels: Mapping[str, str], alert: Mapping[str, Any]) -> None:
    s = f.s
    timing = route_of(f, labels).timing
    if s["group"]["sent"] is None:
        due = s["group"]["first"] + _wait(f, alert, labels)
    else:
        due = s["group"]["sent"] + timing.group_interval
    if due <= f.now:
        flush(f)
        return
    f.schedule(f"grp:{s['episode']}", due, "group")
    if f.outcome in ("recorded", "repeat"):
        f.outcome = "grouped"


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


def _per_alert(f: Fold, p: Pending, name: str, verdict_of: Callable[[Mapping[str, str]], Gate], noun: str, *,
               last: bool) -> Gate:
    """A gate that mutes alerts one by one, as Alertmanager does. Its record says how many it
    muted (verdict ``stop`` if any); the ``last`` of these gates halts the flush when no alert
    is left, to be tried again when the first muted alert may be notified."""
    org = _org(f)
    kept, causes = [], []
    for key, alert in p.notifiable:
        gate = verdict_of(alert_labels(alert, org))
        if gate.stopped:
            p.until.append(gate.until if gate.until is not None else f.now + p.timing.group_interval)
            causes.append(gate)
            f.note(name, gate.reason)
            continue
        kept.append((key, alert))
    muted = len(p.notifiable) - len(kept)
    p.notifiable = kept
    halts = last and not kept
    return Gate(name, gates.STOP if muted else gates.PASS, f"{muted} of {len(p.firing)} {noun}",
                until=min(p.until) if halts and p.until else None, cause=tuple(causes), halts=halts)


def _silences_gate(f: Fold, p: Pending) -> Gate:
    return _per_alert(f, p, "silence", lambda labels: _silence_gate(f, labels), "silenced",
                      last=False)


def _inhibition_gate(f: Fold, p: Pending) -> Gate:
    org, session = _org(f), f.event["session_key"]
    # other sessions' inhibiting alerts (from the context) and this session's own firing ones
    sources = [lbl for key, lbl in f.ctx.inhibitors if key != session] + [alert_labels(a, org) for _, a in p.firing]
    rules = f.ctx.runbooks.routing.inhibit_rules

    def verdict_of(labels: Mapping[str, str]) -> Gate:
        gate = gates.inhibition_gate(labels, sources, rules)
        if not gate.stopped:
            return gate
        # from another session: an outside input to record; from this one: the state has it
        key = next((k for k, lbl in f.ctx.inhibitors if lbl == gate.cause and k != session), None)
        return Gate(gate.gate, gate.verdict, gate.reason, gate.until, None if key is None else (key, gate.cause))

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
    return gates.group_gate(p.kind, first_seen=s["group"]["first"] or 0, last_sent=s["group"]["sent"], now=f.now,
                            timing=p.timing, wait=_wait(f, lead, alert_labels(lead, _org(f))))


def _cooldown_gate(f: Fold, p: Pending) -> Gate | None:
    if p.kind not in TRIGGER_KINDS:
        return None
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
    rb = _runbook(f, found[1]["runbook"])
    f.runbook = rb.name
    pending = Pending(firing=firing, notifiable=list(firing), rb=rb,
                      timing=route_of(f, alert_labels(found[1], _org(f))).timing)
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
    lead_labels = alert_labels(lead, _org(f))
    if kind == "initial":
        if rb.escalates(lead["severity"]):
            receivers = expand_receivers(f, [rb.escalation[0].receiver], lead_labels)
        else:
            receivers = expand_receivers(f, rb.notify_receivers, lead_labels)
    else:
        receivers = list(s.get("first_audience") or s["audience"]) or expand_receivers(f, rb.notify_receivers, lead_labels)
    awaits = bool(s.get("approval")) or (kind == "initial" and any(r.requires_approval for r in rb.remediations))
    extra = "Remediation awaits approval." if awaits else ""
    sent = _send(f, receivers, rb=rb, kind=kind, action="trigger", severity=lead["severity"],
                 title=_title(lead, len(p.notifiable)), body=_body(f, lead, p.notifiable, rb, extra),
                 fields=_fields(lead, rb, len(p.notifiable)), links=_links(f, lead, rb, with_ack=True, approval=awaits),
                 content=p.content, autonomous=True)
    # The news is out (or was stopped by the cap/dedupe): either way this content is settled.
    s["group"]["hash"] = p.content
    if not sent:
        f.outcome = "suppressed"
        return
    f.outcome = "notified"
    s["group"]["sent"] = f.now
    s["alerts"] = {k: a for k, a in s["alerts"].items() if a["status"] == "firing"}
    if kind in TRIGGER_KINDS:
        s["cooldowns"][rb.name] = f.now
    if kind == "initial":
        s["first_audience"] = list(sent)
        _after_first_notification(f, rb, lead)
    f.schedule(f"grp:{s['episode']}", f.now + p.timing.repeat_interval, "group")


def _after_first_notification(f: Fold, rb: Runbook, lead: Mapping[str, Any]) -> None:
    """Remediation steps, the verification timer and the escalation chain start with the first message."""
    s = f.s
    ep = s["episode"]
    for index, step in enumerate(rb.remediations):
        if step.requires_approval:
            s["approval"].append(index)
            continue
        f.remediate(action=step.action, endpoint=step.endpoint, method=step.method, params=step.params,
                    dry_run=step.dry_run, requires_approval=False, runbook=rb.name)
    if rb.verify is not None:
        f.schedule(f"verify:{ep}", f.now + rb.verify.after, "verify")
    if rb.escalates(lead["severity"]) and len(rb.escalation) > 1:
        s["escalation"] = {"runbook": rb.name, "start": f.now, "next": 1}
        f.schedule(f"esc:{ep}:1", f.now + rb.escalation[1].after, "escalation", step=1)


# -- escalation, verification, ack ------------------------------------------------------


def escalate(f: Fold, step: int, why: str = "unacknowledged") -> None:
    s = f.s
    esc = s.get("escalation")
    if s["status"] != "firing" or esc is None:
        f.outcome = "stale-timer"
        return
    rb = _runbook(f, esc["runbook"])
    f.runbook = rb.name
    if s["acked"]:
        f.check(gates.Gate("ack", "stop", "acknowledged"))
        f.outcome = "suppressed"
        return
    if step >= len(rb.escalation):
        f.outcome = "recorded"
        return
    firing = firing_alerts(s)
    _, lead = lead_of(firing)  # type: ignore[misc]
    labels = alert_labels(lead, _org(f))
    if f.check(gates.flapping_gate(s["flap"]["on"], s["flap"]["last"], f.now, rb.policy.flapping)):
        f.outcome = "flapping"
        return
    if f.check(_silence_gate(f, labels)):
        f.outcome = "suppressed"
    else:
        f.check(gates.Gate("ack", "pass", "not acknowledged"))
        chain = rb.escalation[step]
        receivers = expand_receivers(f, [chain.receiver], labels)
        minutes = (f.now - esc["start"]) // 60000
        sent = _send(f, receivers, rb=rb, kind=f"escalation-{step}", action="trigger", severity=lead["severity"],
                     title=f"Escalated ({why} for {minutes}m): {_title(lead, len(firing))}",
                     body=_body(f, lead, firing, rb), fields=_fields(lead, rb, len(firing)),
                     links=_links(f, lead, rb, with_ack=True, approval=bool(s.get("approval"))), content=str(step),
                     autonomous=True)
        f.outcome = "escalated" if sent else "suppressed"
    f.note("escalation_step", step)
    esc["next"] = step + 1
    if step + 1 < len(rb.escalation):
        f.schedule(f"esc:{s['episode']}:{step + 1}", esc["start"] + rb.escalation[step + 1].after, "escalation", step=step + 1)


def verify(f: Fold) -> None:
    """After a remediation: still firing means it did not help; escalate now."""
    s = f.s
    if s["status"] != "firing" or s["acked"]:
        f.outcome = "verified" if s["status"] != "firing" else "recorded"
        return
    esc = s.get("escalation")
    if esc is not None:
        rb = _runbook(f, esc["runbook"])
        step = esc["next"]
        if step < len(rb.escalation):
            f.cancel(f"esc:{s['episode']}:{step}", "verification failed")
            escalate(f, step, why="still firing after remediation")
            return
    found = lead_of(firing_alerts(s))
    if found is None:
        return
    lead = found[1]
    rb = _runbook(f, lead["runbook"])
    f.runbook = rb.name
    if f.check(_silence_gate(f, alert_labels(lead, _org(f)))):
        f.outcome = "suppressed"
        return
    sent = _send(f, list(s["audience"]), rb=rb, kind="verify", action="trigger", severity=lead["severity"],
                 title=f"Still firing after remediation: {lead['title']}", body=_body(f, lead, firing_alerts(s), rb),
                 fields=_fields(lead, rb, 1), links=_links(f, lead, rb, with_ack=True), content="verify", autonomous=True)
    f.outcome = "escalated" if sent else "suppressed"


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
    rb = _policy_runbook(f)
    f.runbook = rb.name
    f.outcome = "acknowledged"
    if source == "pagerduty":
        return
    pd = [r for r in s["audience"] if f.ctx.runbooks.routing.channel_of(r) == "pagerduty"]
    if pd:
        found = lead_of(firing_alerts(s))
        lead = found[1] if found else {"title": f.event["session_key"], "labels": {}}
        _send(f, pd, rb=rb, kind="ack", action="acknowledge", severity="info",
              title=f"Acknowledged by {actor or source}: {lead['title']}", body="", fields={}, links=[],
              content="ack", autonomous=False)


def on_approval(f: Fold, actor: str) -> None:
    s = f.s
    reset_cap(f, "human")
    if s["status"] != "firing" or not s.get("approval"):
        f.outcome = "recorded"
        return
    found = lead_of(firing_alerts(s))
    rb = _runbook(f, found[1]["runbook"]) if found else _policy_runbook(f)
    f.runbook = rb.name
    steps = rb.remediations
    for index in s["approval"]:
        if index < len(steps):
            step = steps[index]
            f.remediate(action=step.action, endpoint=step.endpoint, method=step.method,
                        params={**step.params, "approved_by": actor}, dry_run=step.dry_run, requires_approval=True,
                        runbook=rb.name)
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
    f.runbook = _policy_runbook(f).name
    f.note("rejected_by", actor)
    f.note("rejected_steps", ",".join(str(i) for i in s["approval"]))
    s["approval"] = []
    f.outcome = "rejected"


def on_flap_timer(f: Fold) -> None:
    """Flapping ends once the session has been stable for ``stable_for``; then say where it stands."""
    s = f.s
    flap = s["flap"]
    rb = _policy_runbook(f)
    if not flap["on"]:
        f.outcome = "stale-timer"
        return
    pol = rb.policy.flapping
    if f.now - (flap["last"] or 0) < pol.stable_for:
        f.schedule("flap", flap["last"] + pol.stable_for, "flap")
        f.outcome = "flapping"
        return
    flap.update(on=False, flips=[], noticed=False)
    f.note("flapping", "stable")
    if s["status"] == "firing":
        s["group"]["hash"] = None
        if s["group"]["sent"] is None:
            s["group"]["first"] = f.now
        flush(f)
    elif s["audience"]:
        f.runbook = rb.name
        _send_resolved(f, rb)
        s["alerts"] = {}
    else:
        f.outcome = "stable"
