"""The runbook set's command-line verbs: ``opsloop check``, ``opsloop route test``, ``opsloop silence``.

``check`` loads the whole set (runbooks, routing, maintenance windows, schedules) the
way a worker does; an error prints ``file:line: reason`` and exits 1. ``route test``
answers what ``amtool config routes test`` answers, plus the runbook: for a label set,
which runbook takes the event, which routes and receivers it reaches, the escalation
chain and the grouping it gets. ``silence`` produces silence events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.errors import InvalidInputError
from streams.model.receivers import ChannelSpec
from streams.model.routing import Route, routing_labels
from streams.model.runbooks import ROUTE_RECEIVER, RunbookSet, load_runbook_set
from streams.model.taxonomy import SEVERITIES

FACTS_DEFAULTS = {"kind": "telemetry", "event_type": "alert.firing", "source": "prometheus", "org": "default"}


class UsageError(InvalidInputError, ValueError):
    """Bad command-line arguments; the message says which."""


def summary(rset: RunbookSet) -> str:
    routes = _count_routes(rset.routing.route)
    disabled = sum(not s.enabled for s in rset.schedules)
    return (
        f"{rset.directory}: ok — {len(rset.runbooks)} runbooks, {len(rset.routing.receivers)} receivers, "
        f"{routes} routes, {len(rset.routing.inhibit_rules)} inhibit rules, {len(rset.schedules)} schedules{f' ({disabled} disabled)' if disabled else ''}, "
        f"{len(rset.maintenance)} maintenance windows (version {rset.version})"
    )


def _count_routes(route: Route) -> int:
    return 1 + sum(_count_routes(child) for child in route.routes)


def parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"expected label=value, got {pair!r}")
        labels[name.strip()] = value.strip().strip('"')
    return labels


def _ms(value: int) -> str:
    from streams.core.gates import _ms as fmt

    return fmt(value) if value else "0s"


def route_test(rset: RunbookSet, pairs: Sequence[str]) -> list[str]:
    """The lines ``opsloop route test`` prints for one label set."""
    from streams.model.records import EVENT_KINDS
    from streams.model.taxonomy import normalize_severity

    labels = parse_pairs(pairs)
    # `route test type=agent.needs_input` names the event's type; with an alertname it is the alert's label
    # (Ceph's rules all carry type="ceph_default", and the test answered for an event of that type)
    if "type" in labels and "event_type" not in labels and "alertname" not in labels:
        labels["event_type"] = labels.pop("type")
    if "event_type" in labels and "kind" not in labels:
        labels["kind"] = _kind_of(labels["event_type"])
    facts = {k: labels.pop(k, v) for k, v in FACTS_DEFAULTS.items()}
    if facts["kind"] not in EVENT_KINDS:  # decide dead-letters such an event: no route to show
        raise UsageError(f"unknown kind {facts['kind']!r}; expected one of {', '.join(EVENT_KINDS)}")
    out = []
    severity = labels.pop("severity", "")
    category = labels.pop("category", "")
    stated = bool(severity)
    if severity and severity not in SEVERITIES:
        normalised = normalize_severity(severity)
        if not normalised:
            raise UsageError(f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}")
        out.append(f"note:       severity {severity!r} is normalised to {normalised!r}")
        severity = normalised
    if not category or not severity:
        guess = _classify(labels, facts, severity)
        out.append(f"classifier: {guess[2]} says category={guess[0]} severity={guess[1]}")
        category = category or guess[0]
        severity = severity or guess[1]
    return out + routed(rset, labels, facts, category, severity, stated).lines


@dataclass(frozen=True)
class Routed:
    """Where an event with this verdict goes: what ``route test`` prints, and the gist of it."""

    lines: list[str]
    runbook: str  # "" when no runbook takes it (an unmatched webhook type)
    severity: str  # the runbook's own severity when it sets one and the sender stated none
    notify: list[str]  # the first notification's receivers


def routed(
    rset: RunbookSet,
    labels: Mapping[str, str],
    facts: Mapping[str, str],
    category: str,
    severity: str,
    stated: bool,
) -> Routed:
    """The runbook, routes, receivers and policy an event gets once classified (``labels`` without severity)."""
    out: list[str] = []
    rlabels = routing_labels(
        dict(labels),
        category=category,
        severity=severity,
        org=facts["org"],
        source=facts["source"],
        kind=facts["kind"],
        event_type=facts["event_type"],
    )
    fate = _fate(rset, rlabels, category, severity, facts)
    if fate is not None:
        from streams.core.fates import default_receiver

        receiver = default_receiver(rset.routing)
        return Routed(fate, "", severity, [receiver] if receiver else [])
    rb = rset.select(rlabels, category=category, severity=severity, event_type=facts["event_type"], kind=facts["kind"])
    if rb.severity and severity != rb.severity and not stated:
        out.append(f"severity:   {rb.severity} (the runbook's, for its types; the sender stated none)")
        severity = rb.severity
        rlabels["severity"] = severity
    where = f" ({Path(rb.path).name}:{rb.line})" if rb.path else " (built in)"
    out.append(f"runbook:    {rb.name}{where}")
    matches = rset.routing.match(rlabels)
    for m in matches:
        t = m.timing
        wait = 0 if facts["kind"] != "telemetry" or facts["source"] in t.upstream_grouped else t.group_wait
        out.append(
            f"route:      {m.path} -> {m.receiver}  (group_wait {_ms(wait)}, group_interval "
            f"{_ms(t.group_interval)}, repeat_interval {_ms(t.repeat_interval)})"
        )
    route_receivers = rset.routing.receivers_for(rlabels)

    def expand(name: str) -> list[str]:
        return route_receivers if name == ROUTE_RECEIVER else [name]

    if rb.escalates(severity):
        receivers = expand(rb.escalation[0].receiver)
        out.append(f"notify:     {', '.join(receivers)}")
        chain = ", ".join(f"+{_ms(s.after)} {'/'.join(expand(s.receiver))}" for s in rb.escalation[1:])
        out.append(f"escalation: {chain or '(none)'} — until acknowledged or resolved")
    else:
        receivers = []
        for name in rb.notify_receivers:
            receivers += [r for r in expand(name) if r not in receivers]
        out.append(f"notify:     {', '.join(receivers) or '(nobody)'}")
        if rb.escalation:
            out.append(f"escalation: only from severity {rb.policy.escalate_from}")
    for step in rb.remediations:
        mode = "dry run" if step.dry_run else "live on workers with OPSLOOP_SINK_REMEDIATION_ENABLED=true"
        approval = ", after approval" if step.requires_approval else ""
        out.append(f"remediate:  {step.action} ({mode}{approval})")
    p = rb.policy
    out.append(
        f"policy:     cooldown {_ms(p.cooldown)}, dedupe_window {_ms(p.dedupe_window)}, "
        f"max_consecutive {p.max_consecutive} (reset on {', '.join(p.reset_on)})"
    )
    import time

    from streams.model.silences import muting

    now = int(time.time() * 1000)
    window = muting(rset.maintenance, rlabels, now)
    if window is not None:
        out.append(f"muted:      maintenance window {window.silence_id} until {window.ends_at}")
    return Routed(out, rb.name, severity, receivers)


def _kind_of(event_type: str) -> str:
    """The kind an event of this type usually has (``kind=`` overrides)."""
    if event_type.startswith(("alert", "metric")):
        return "telemetry"
    return "scan" if event_type == "scan.completed" else "webhook"


def _fate(
    rset: RunbookSet, rlabels: Mapping[str, str], category: str, severity: str, facts: Mapping[str, str]
) -> list[str] | None:
    """For a webhook type no runbook names and decide does not know: what ``unmatched`` means."""
    from streams.core.decide import known_webhook_type
    from streams.core.fates import claimed_by, default_receiver

    kind, etype = facts["kind"], facts["event_type"]
    if kind != "webhook" or known_webhook_type(etype):
        return None
    if claimed_by(rset, rlabels, category, severity, etype, kind) is not None:
        return None
    receiver = default_receiver(rset.routing)
    if not receiver:
        return [f"runbook:    (none) — {etype!r} is unmatched: recorded, counted, sent nowhere (no routing.yaml)"]
    return [
        f"runbook:    (none) — no runbook names type {etype!r} and decide has no meaning for it",
        f"unmatched → default receiver {receiver} (route, once per session episode; silence, cap and dedupe apply)",
        f"notify:     {receiver}",
    ]


def _classify(labels: dict[str, str], facts: dict[str, str], severity: str) -> tuple[str, str, str]:
    try:
        from classifier import load_classifier

        clf = load_classifier()
    except Exception:  # noqa: BLE001 - the model is optional here; the rules always work
        from classifier.keyword import KeywordClassifier

        clf = KeywordClassifier()
    event = {
        "event_id": "route-test",
        "session_key": "route-test",
        "kind": facts["kind"],
        "type": facts["event_type"],
        "source": facts["source"],
        "org": facts["org"],
        "occurred_at": 0,
        "received_at": 0,
        "labels": {**labels, **({"severity": severity} if severity else {})},
        "annotations": {},
        "payload": None,
    }
    p = clf.predict_batch([event])[0]
    return p.category, p.severity, p.model_version


def check(directory: str | Path, channels: Mapping[str, ChannelSpec]) -> str:
    """The set's summary, after every file of the directory was loaded as the processes load them: the session
    rules and the producers' scopes as ingest reads them at start (``check`` passed a sessions.yaml of
    ``rules: 5`` that ingest then refused)."""
    from streams.ingest.scopes import load_scopes
    from streams.ingest.sessions import load_session_rules

    text = summary(load_runbook_set(directory, channels=channels))
    sessions, scopes = Path(directory) / "sessions.yaml", Path(directory) / "ingest-scopes.yaml"
    if sessions.exists():
        text += f"; {len(load_session_rules(sessions))} session rules"
    if scopes.exists():
        text += f"; {len(load_scopes(scopes, ''))} producer scopes"
    return text


def verify_receivers(rset: RunbookSet, pairs: Sequence[str], expected: str) -> tuple[bool, str]:
    """amtool's --verify.receivers: compare the routed receivers with a comma-separated list."""
    lines = route_test(rset, pairs)
    got = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("notify:")), "")
    want = ", ".join(r.strip() for r in expected.split(",") if r.strip())
    return got == want, got


# -- handlers (streams.cli.main imports this module only when one of them runs) ---------------


def run_check(directory: str | None, channels: Mapping[str, ChannelSpec]) -> int:
    from streams.settings import Settings

    print(check(directory or Settings.from_env().runbooks_dir, channels))
    return 0


def run_route_test(
    directory: str | None, pairs: Sequence[str], channels: Mapping[str, ChannelSpec], expect: str | None = None
) -> int:
    import sys

    from streams.settings import Settings

    rset = load_runbook_set(directory or Settings.from_env().runbooks_dir, channels=channels)
    try:
        lines = route_test(rset, pairs)
    except UsageError as exc:
        print(f"opsloop route test: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    if expect is not None:
        ok, got = verify_receivers(rset, pairs, expect)
        if not ok:
            print(f"opsloop route test: expected receivers {expect!r}, got {got!r}", file=sys.stderr)
            return 1
    return 0


def run_silence(
    action: str, args: Sequence[str], *, duration: str, start: str | None, comment: str, by: str, org: str
) -> int:
    """``silence add MATCHER...`` / ``silence expire ID``: produce the event and wait for Kafka's ack."""
    import asyncio
    import sys
    import time

    from streams.kafka.producer import EventProducer
    from streams.model.records import utc_text
    from streams.model.silences import SilenceError, expire_event, parse_time_ms, silence_event, silence_from_json
    from streams.model.yamlfile import parse_duration_ms
    from streams.settings import Settings

    now = int(time.time() * 1000)
    try:
        if action == "add":
            starts = parse_time_ms(start) if start else now
            ends = starts + parse_duration_ms(duration)
            if ends <= now:  # as Alertmanager's API (and ingest's) answers: it would mute nothing, ever
                raise SilenceError(f"--start + --duration ends at {utc_text(ends)}, in the past")
            silence = silence_from_json(
                {"matchers": list(args), "starts_at": starts, "ends_at": ends, "created_by": by, "comment": comment}
            )
            event = silence_event(silence, org=org, now_ms=now, actor=by)
            shown = (
                f"silence {silence.silence_id}: {', '.join(str(m) for m in silence.matchers)} "
                f"from {utc_text(starts)} until {utc_text(ends)}"
            )
        else:
            if len(args) != 1:
                raise SilenceError("expire takes one silence id")
            event = expire_event(args[0], org=org, now_ms=now, actor=by)
            shown = f"expired silence {args[0]}"
    except (SilenceError, ValueError) as exc:
        print(f"opsloop silence: {exc}", file=sys.stderr)
        return 1

    async def send() -> None:
        async with EventProducer(Settings.from_env()) as producer:
            await producer.send(event)

    asyncio.run(send())
    print(shown)
    return 0
