"""A session's incident life cycle: alerts trigger and clear, the session resolves, flapping.

Everything here folds one event into the session state held by a :class:`Fold`
(no I/O, time is the event's). The state's shape is :class:`streams.core.state.SessionState`;
grouping (:mod:`streams.core.grouping`), escalation (:mod:`streams.core.escalation`) and human
answers (:mod:`streams.core.ack`) are the other parts of the life cycle.
"""

from __future__ import annotations

from streams.core import gates
from streams.core.fold import Fold
from streams.core.grouping import flush, schedule_flush
from streams.core.messages import (
    alert_labels,
    expand_receivers,
    fields_of,
    firing_alerts,
    lead_of,
    links_of,
    org_of,
    policy_runbook,
    reset_cap,
    route_of,
    runbook_named,
    send,
    silence_gate_of,
    title_of,
)
from streams.core.state import MAX_OVERFLOW_KEPT, AlertState
from streams.model.runbooks import Runbook

MAX_ALERTS = 200  # per session; beyond this new alerts are counted, not stored
CONTENT_FIELDS = ("title", "body", "url", "links")  # what a re-send of a firing alert may say anew


# -- triggers and clears ----------------------------------------------------------------


def on_trigger(f: Fold, akey: str, alert: AlertState) -> None:
    """An alert (or a scan finding, a pull request, a condition) starts or keeps firing."""
    s = f.s
    f.note("alert", akey)
    current = s["alerts"].get(akey)
    if current is not None and current["status"] == "firing":
        # Prometheus re-sends a firing alert every evaluation, its annotations as they read now ("fsync
        # durations are 0.7s"): the next message about it says that, as Alertmanager's does, not what the
        # first send said. Its severity and runbook stay (a re-worded text must not move it).
        for name in CONTENT_FIELDS:
            if name in alert:
                current[name] = alert[name]  # type: ignore[literal-required]
            else:
                current.pop(name, None)  # type: ignore[misc]
        f.outcome = "repeat"  # nothing new to say
        return
    if current is None and len(s["alerts"]) >= MAX_ALERTS:
        # Counted once per alert, not per event: Prometheus re-sends each every evaluation, and "... and 210
        # more" grew with every re-send of 5 alerts past the cap. Past MAX_OVERFLOW_KEPT, "at least" that many.
        kept = s.get("overflow_keys") or []
        if akey not in kept and len(kept) < MAX_OVERFLOW_KEPT:
            s["overflow_keys"] = kept = [*kept, akey]
        s["overflow"] = len(kept)
        f.outcome = "overflow"
        return
    rb = runbook_named(f, alert["runbook"])
    f.runbook = rb.name
    if s["status"] != "firing":
        _status_change(f, "firing", rb)
        if not s["flap"]["on"]:
            s["episode"] += 1
            # The group waits from the alert's own time, not the session's clock: an event of another
            # topic (an ack on events.webhook) may have moved the clock past it first, and Kafka orders
            # a session's topics differently from run to run (a re-decision after a lost state write),
            # so the flush's due time, and with it the notice's effect id, must not depend on that.
            s["group"] = {"first": min(f.now, int(f.event["occurred_at"])), "sent": None, "hash": None}
            s["audience"], s["first_audience"], s["acked"], s["escalation"], s["approval"] = [], [], False, None, []
            s["runbook"] = rb.name
            s["alerts"] = {k: a for k, a in s["alerts"].items() if a["status"] == "firing"}
            s["overflow"], s["overflow_keys"] = 0, []  # the last episode's, which a later one told as its own
        s["status"] = "firing"
    alert["status"], alert["at"], alert["first"] = "firing", f.now, (current or {}).get("first", f.now)
    s["alerts"][akey] = alert
    f.note("episode", s["episode"])
    if alert["severity"] != f.ctx.verdict.severity:  # the runbook's (the record's severity is the classifier's)
        f.note("severity", alert["severity"])
    if s["flap"]["on"]:
        if _flap_notice(f, rb):
            return
        f.outcome = "flapping"
        return
    labels = alert_labels(alert, org_of(f))
    f.note("route", route_of(f, labels).path)
    schedule_flush(f, rb, labels, alert)


def on_clear(f: Fold, akey: str, *, cause: str = "resolve", echo_to: str = "") -> None:
    """An alert stops firing; when the last one does, the session resolves."""
    s = f.s
    f.note("alert", akey)
    alert = s["alerts"].get(akey)
    if alert is None or alert["status"] != "firing":
        if akey in (kept := s.get("overflow_keys") or []):  # one past the cap no longer fires
            s["overflow_keys"] = [k for k in kept if k != akey]
            s["overflow"] = len(s["overflow_keys"])
        f.outcome = "recorded"
        return
    alert["status"], alert["at"] = "resolved", f.now
    f.cancel(f"ends:{akey}", cause)
    f.runbook = s.get("runbook") or alert["runbook"]
    if firing_alerts(s):
        f.outcome = "grouped"
        schedule_flush(f, runbook_named(f, f.runbook), alert_labels(alert, org_of(f)), alert)
        return
    resolve_session(f, cause=cause, skip_channel=echo_to)


def resolve_session(f: Fold, *, cause: str, skip_channel: str = "") -> None:
    """Everything stopped firing (or a human resolved it): stop timers, say so to whoever was told."""
    s = f.s
    rb = policy_runbook(f)
    f.runbook = rb.name
    for alert in s["alerts"].values():
        if alert["status"] == "firing":
            alert["status"], alert["at"] = "resolved", f.now
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
        send_resolved(f, rb, skip_channel, only_channel="pagerduty")
        if not _flap_notice(f, rb):
            f.check(gates.flapping_gate(True, s["flap"]["last"], f.now, rb.policy.flapping))
            f.outcome = "flapping"
        return
    if not s["audience"]:
        f.outcome = "resolved-quietly"  # resolved within group_wait, before anyone was told
        s["alerts"] = {}
        return
    send_resolved(f, rb, skip_channel)
    s["alerts"] = {}


def send_resolved(f: Fold, rb: Runbook, skip_channel: str = "", only_channel: str = "") -> None:
    s = f.s
    alerts = sorted(s["alerts"].items())
    found = lead_of(alerts)
    if found is None:
        return
    lead = found[1]
    channel_of = f.ctx.runbooks.routing.channel_of
    receivers = [
        r
        for r in s["audience"]
        if channel_of(r) != skip_channel and (not only_channel or channel_of(r) == only_channel)
    ]
    if not receivers and only_channel:
        return
    title = f"Resolved: {title_of(lead, len(alerts))}"
    sent = send(
        f,
        receivers,
        rb=rb,
        kind="resolve",
        action="resolve",
        severity="info",
        title=title,
        body=f"{lead['title']} is no longer firing.",
        fields=fields_of(lead, rb, len(alerts)),
        links=links_of(f, lead, rb, with_ack=False),
        content="resolve",
        autonomous=False,
    )
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
    labels = alert_labels(lead, org_of(f))
    if f.check(silence_gate_of(f, labels)):
        return False
    receivers = s["audience"] or expand_receivers(f, rb.notify_receivers, labels)
    if s["status"] != "firing":  # noticed as it resolves: tell the people, never trigger a pager
        receivers = [r for r in receivers if f.ctx.runbooks.routing.channel_of(r) != "pagerduty"]
    pol = rb.policy.flapping
    sent = send(
        f,
        receivers,
        rb=rb,
        kind="flapping",
        action="trigger",
        severity="warning",
        title=f"Flapping: {lead['title']}",
        body=(
            f"{len(s['flap']['flips'])} status changes within {pol.window // 60000}m. "
            f"Quiet until it has been stable for {pol.stable_for // 60000}m."
        ),
        fields=fields_of(lead, rb, len(firing)),
        links=links_of(f, lead, rb, with_ack=True),
        content=str(s["flap"]["last"]),
        autonomous=True,
    )
    f.outcome = "flapping-notice" if sent else "suppressed"
    return bool(sent)


def on_flap_timer(f: Fold) -> None:
    """Flapping ends once the session has been stable for ``stable_for``; then say where it stands."""
    s = f.s
    flap = s["flap"]
    rb = policy_runbook(f)
    if not flap["on"]:
        f.outcome = "stale-timer"
        return
    pol = rb.policy.flapping
    if f.now - (flap["last"] or 0) < pol.stable_for:
        f.schedule("flap", (flap["last"] or 0) + pol.stable_for, "flap")
        f.outcome = "flapping"
        return
    flap["on"], flap["flips"], flap["noticed"] = False, [], False
    f.note("flapping", "stable")
    if s["status"] == "firing":
        s["group"]["hash"] = None
        if s["group"]["sent"] is None:
            s["group"]["first"] = f.now
        flush(f)
    elif s["audience"]:
        f.runbook = rb.name
        send_resolved(f, rb)
        s["alerts"] = {}
    else:
        f.outcome = "stable"
