"""What every part of a session's life cycle shares: its alerts' routing labels, the lead
alert, routes and receivers, message content, and the one way a message goes out
(:func:`send`, through the cap and the dedupe window).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streams.core import gates
from streams.core.fold import Fold
from streams.core.state import MAX_OVERFLOW_KEPT, AlertState
from streams.model.records import derived_id
from streams.model.routing import RouteMatch, routing_labels
from streams.model.runbooks import ROUTE_RECEIVER, Runbook
from streams.model.silences import Silence
from streams.model.taxonomy import SEVERITY_RANK

MAX_LISTED = 10  # alerts listed in a message body


def alert_labels(alert: Mapping[str, Any], org: str) -> dict[str, str]:
    return routing_labels(
        alert.get("labels") or {},
        category=alert["category"],
        severity=alert["severity"],
        org=org,
        source=alert.get("source", ""),
        kind=alert.get("kind", ""),
        event_type=alert.get("type", ""),
    )


def firing_labels(s: Mapping[str, Any], org: str) -> list[dict[str, str]]:
    """Routing labels of the session's firing alerts (what inhibit rules match on)."""
    return [alert_labels(a, org) for _, a in firing_alerts(s)]


def firing_alerts(s: Mapping[str, Any]) -> list[tuple[str, AlertState]]:
    return sorted(((k, a) for k, a in s["alerts"].items() if a["status"] == "firing"), key=lambda ka: ka[0])


def lead_of(alerts: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[str, Mapping[str, Any]] | None:
    """The alert that speaks for the group: most severe, then oldest."""
    best = None
    for key, alert in alerts:
        rank = (-SEVERITY_RANK.get(alert["severity"], 1), alert.get("first", 0), key)
        if best is None or rank < best[0]:
            best = (rank, key, alert)
    return None if best is None else (best[1], best[2])


def org_of(f: Fold) -> str:
    return str(f.event.get("org", "default"))


def runbook_named(f: Fold, name: str) -> Runbook:
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
        for receiver in f.ctx.runbooks.routing.receivers_for(labels) if name == ROUTE_RECEIVER else [name]:
            if receiver not in out:
                out.append(receiver)
    return out


def policy_runbook(f: Fold) -> Runbook:
    return runbook_named(f, f.s.get("runbook") or "")


def reset_cap(f: Fold, cause: str) -> None:
    rb = policy_runbook(f)
    if gates.resets_cap(rb.policy.reset_on, cause) and f.s["consecutive"]:
        f.note("cap_reset", cause)
        f.s["consecutive"] = 0


def group_wait(f: Fold, alert: Mapping[str, Any], labels: Mapping[str, str]) -> int:
    """group_wait for a new alert: only telemetry from a source that does not group is held."""
    timing = route_of(f, labels).timing
    if alert.get("kind") != "telemetry":
        return 0
    return timing.wait_for(alert.get("source", ""))


# -- content ----------------------------------------------------------------------------


def title_of(alert: Mapping[str, Any], count: int) -> str:
    more = f" (+{count - 1} more)" if count > 1 else ""
    return f"{alert['title']}{more}"


# Labels that tell a group's alerts apart, in the order a reader looks for them; others that differ follow.
TELLING_FIRST = ("instance", "pod", "container", "mountpoint", "device", "persistentvolumeclaim", "namespace", "job")
TELLING_MAX = 4  # labels per listed alert
TELLING_VALUE_MAX = 80


def telling_labels(alerts: Sequence[Mapping[str, Any]]) -> list[str]:
    """For each alert, the labels whose values differ within ``alerts`` (``pod=checkout-1, container=app``).

    Why: a group's alerts were listed by instance (or service) alone, and kube-state-metrics' alerts all
    carry its own address as the instance: two crash-looping pods were listed as the same line twice, the
    new pod never named; two filesystems of one node likewise. A value the alert's title already says is
    left out; where nothing differs, the instance or service as before.
    """
    names = sorted({k for a in alerts for k in (a.get("labels") or {})})
    differing = [k for k in names if len({str((a.get("labels") or {}).get(k, "")) for a in alerts}) > 1]
    differing.sort(key=lambda k: (TELLING_FIRST.index(k) if k in TELLING_FIRST else len(TELLING_FIRST), k))
    out = []
    for a in alerts:
        labels, title = a.get("labels") or {}, str(a.get("title", ""))
        shown = [f"{k}={_cut(str(labels[k]))}" for k in differing if labels.get(k) and str(labels[k]) not in title][
            :TELLING_MAX
        ]
        if not shown:
            where = str(labels.get("instance") or labels.get("service") or "")
            shown = [where] if where and where not in title else []
        out.append(", ".join(shown))
    return out


def _cut(value: str) -> str:
    return value if len(value) <= TELLING_VALUE_MAX else value[: TELLING_VALUE_MAX - 1] + "…"


def group_count(f: Fold, alerts: Sequence[Any]) -> int:
    """How many alerts a group's message tells of: those kept and those past the session's cap."""
    return len(alerts) + int(f.s.get("overflow") or 0)


def _at_least(f: Fold) -> str:
    """ "+" once the alerts past the cap are more than the session remembers (incident.MAX_OVERFLOW_KEPT)."""
    return "+" if len(f.s.get("overflow_keys") or ()) >= MAX_OVERFLOW_KEPT else ""


def body_of(
    f: Fold, lead: Mapping[str, Any], alerts: Sequence[tuple[str, Mapping[str, Any]]], rb: Runbook, extra: str = ""
) -> str:
    lines = [lead.get("body") or ""]
    overflow = int(f.s.get("overflow") or 0)  # alerts past the session's cap: counted, not kept
    if len(alerts) + overflow > 1:
        lines.append(f"{len(alerts) + overflow}{_at_least(f)} alerts firing:")
        listed = [a for _, a in alerts[:MAX_LISTED]]
        for a, where in zip(listed, telling_labels(listed), strict=True):
            lines.append(f"- {a['title']}" + (f" ({where})" if where else ""))
        if len(alerts) > MAX_LISTED or overflow:
            lines.append(f"... and {len(alerts) - min(len(alerts), MAX_LISTED) + overflow}{_at_least(f)} more")
    if rb.description:
        lines.append(f"Runbook {rb.name}: {rb.description}")
    if extra:
        lines.append(extra)
    return "\n".join(line for line in lines if line)


def fields_of(lead: Mapping[str, Any], rb: Runbook, count: int) -> dict[str, str]:
    # The runbook is the effect's own ``runbook``; every formatter shows it from there (not as a field too).
    fields = {k: v for k, v in (lead.get("labels") or {}).items() if k not in ("alertname",)}
    if count > 1:
        fields["alerts"] = str(count)
    if lead.get("inferred"):
        fields["classified"] = str(lead["inferred"])  # severity / category the sender did not state
    return fields


# Annotations that link somewhere, as the houses write them (kubernetes-mixin puts runbook_url on every alert).
# The annotations houses put their links in, first of a label wins: kubernetes-mixin's runbook_url, a plain
# `runbook` (http(s) only: GitLab's are repository paths), Ceph's mixin's `documentation` (17 of its 23 rules'
# only link).
ANNOTATION_LINKS = (
    ("runbook_url", "Runbook"),
    ("runbook", "Runbook"),
    ("dashboard_url", "Dashboard"),
    ("documentation", "Documentation"),
)
LINK_MAX = 2048


def annotation_body(annotations: Mapping[str, Any]) -> str:
    """An alert's text for people: ``description``, else ``message`` (older kubernetes-mixin rules and many
    houses write only that; their notifications had no text at all)."""
    return str(annotations.get("description") or annotations.get("message") or "")


def annotation_links(annotations: Mapping[str, Any]) -> list[list[str]]:
    """``[label, url]`` of the alert's own runbook and dashboard links (http(s) only): an on-call who gets the
    page wants the runbook its rule's authors wrote, which opsloop's messages left out."""
    out: list[list[str]] = []
    for key, label in ANNOTATION_LINKS:
        url = annotations.get(key)
        if any(have == label for have, _ in out):
            continue
        if isinstance(url, str) and url.startswith(("http://", "https://")) and len(url) <= LINK_MAX:
            out.append([label, url])
    return out


def links_of(
    f: Fold, lead: Mapping[str, Any], rb: Runbook, with_ack: bool, approval: bool = False, sent_at: int = 0
) -> list[dict[str, str]]:
    """Acknowledge (and Approve / Reject while a remediation waits) as signed one-use links, then Source, the
    alert's own runbook and dashboard links (:func:`annotation_links`), and the opsloop runbook's.

    The signed links last the ack TTL from when the message goes out: the session's time or, when later,
    ``sent_at`` (a group's message: :func:`streams.core.grouping.notice_time`) or the arrival of the event
    that sends it (a flapping notice, a remediation's outcome): a message about an alert that reached
    opsloop a day after its startsAt carried links that had expired before it was sent."""
    links = []
    ctx = f.ctx
    if with_ack and ctx.ack_base_url and ctx.ack_secret:
        from streams.core.acklinks import action_link, link_id

        sent = max(f.now, sent_at, arrival(f.event))
        expires, session, org = sent + ctx.ack_ttl_ms, f.event["session_key"], org_of(f)
        actions = [("Acknowledge", "ack")] + ([("Approve", "approve"), ("Reject", "reject")] if approval else [])
        for label, action in actions:
            url = action_link(
                ctx.ack_base_url,
                session,
                action,
                expires,
                ctx.ack_secret,
                jti=link_id(f.carrier_id, session, action),
                org=org,
                episode=int(f.s["episode"]),
            )
            links.append({"label": label, "url": url})
    if lead.get("url"):
        links.append({"label": "Source", "url": lead["url"]})
    own = lead.get("links") or []
    links.extend({"label": label, "url": url} for label, url in own)
    if rb.url and rb.url not in (url for _, url in own):
        # the alert's own runbook is "Runbook"; opsloop's, beside it, says whose it is
        links.append(
            {"label": "opsloop runbook" if any(label == "Runbook" for label, _ in own) else "Runbook", "url": rb.url}
        )
    return links


def dedupe_key(f: Fold, receiver: str, action: str, kind: str, content: str) -> str:
    """Same session, receiver, action, episode and content: the same message.

    A group's first message, its updates and repeats all say "these alerts fire", so
    they share one kind here: the same alert set is not re-sent inside the window.
    """
    kind = "group" if kind in ("initial", "update", "repeat") else kind
    return derived_id("dedupe", f.event["session_key"], receiver, action, kind, str(f.s["episode"]), content)


def send(
    f: Fold,
    receivers: list[str],
    *,
    rb: Runbook,
    kind: str,
    action: str,
    severity: str,
    title: str,
    body: str,
    fields: Mapping[str, str],
    links: list[dict[str, str]],
    content: str,
    autonomous: bool,
) -> list[str]:
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
        f.notify(
            channel=f.ctx.runbooks.routing.channel_of(receiver),
            receiver=receiver,
            severity=severity,
            title=title,
            body=body,
            fields=fields,
            links=links,
            dedupe_key=key,
            action=action,
            runbook=rb.name,
        )
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


def silences_of(f: Fold) -> tuple[Silence, ...]:
    return (*f.ctx.runbooks.maintenance, *f.ctx.silences)


SESSION_LABEL = "opsloop_session"  # what a silence made from a message ("silence 1h") matches on


def silence_gate_of(f: Fold, labels: Mapping[str, str], arrived: int = 0) -> gates.Gate:
    """Silences match the routing labels plus the session key (so a silence can name one session).

    They are checked when the message goes out, as Alertmanager checks them when it sends: at the
    session's time or, when later, at the arrival of what is notified (``arrived``: an alert's, see
    :func:`arrival`; else the folded event's). Why: an alert can reach opsloop well after its ``startsAt``:
    Alertmanager forwards a group to ``/ingest/alertmanager`` after its group wait or interval (62 s after
    startsAt with Debian's Alertmanager in a try from outside; up to 5 min by default), and Prometheus
    re-sends firing alerts with their first startsAt after opsloop or the network was down. Its
    notification was timed at startsAt, and a silence created in between (or a maintenance window that
    began meanwhile) did not mute it: the page went out during an active silence."""
    silences = silences_of(f)
    if not silences:  # the usual case: no label copy, no arrival to work out
        return gates.silence_gate((), labels, f.now)
    at = max(f.now, arrived or arrival(f.event))
    return gates.silence_gate(silences, {**labels, SESSION_LABEL: f.event["session_key"]}, at)


def arrival(event: Mapping[str, Any]) -> int:
    """When an event reached opsloop: its ``received_at`` (ingest's clock, recorded in the event, so a replay
    sees the same), never before its own time. A timer event's own time: whether the ticker fired it promptly
    or a later event folded it must not change what it decides (``test_the_fold_does_not_depend_on_when_the_
    ticker_runs``); the alerts it notifies carry their own arrival."""
    at = int(event["occurred_at"])
    if event.get("kind") == "timer":
        return at
    return max(at, int(event.get("received_at") or 0))
