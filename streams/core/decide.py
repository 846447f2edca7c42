"""decide(state, event, ctx) -> Decision: the pure fold at the centre of opsloop.

No I/O, no wall clock, no randomness: time is the event's own ``occurred_at`` (kept
monotonic per session), and everything from outside (the classifier's verdict, the
runbook set and routing with their versions, the silences and the firing alerts of
other sessions that may inhibit this one, the ack-link secret) arrives in ``ctx``.
Same inputs, same outputs, byte for byte, which is what makes replay and audit
cheap. Effect ids derive from the event id and what the effect is about (receiver
and action, timer id), so re-processing an event after a crash yields the same ids
and the sinks' ledger delivers each once.

What an event means to a session:

- telemetry ``alert.firing`` / ``alert.resolved`` (or a payload status): an alert of
  the session's group fires or clears; a sample (``payload.metric`` and ``value``)
  runs the runbooks' condition triggers;
- webhook ``ack`` / ``incident.acknowledged``: a human took it; ``incident.resolved``:
  a human resolved it; ``pr.opened`` & co.: a review is wanted, ``pr.closed`` ends it;
  ``<thing>.failed`` / ``<thing>.succeeded``: a failure fires / clears;
  ``remediation.approved``: run the remediation waiting for approval; ``remediation.rejected``: drop it;
  ``remediation.succeeded|failed|dead|timed_out`` (from the sink): run the step's ``then`` / ``on_failure``
  (:mod:`streams.core.outcomes`);
  ``silence.created`` / ``silence.expired``: recorded here, kept by the agent;
- scan ``scan.completed``: findings fire, a clean scan clears, a failed scan fires;
- timer ``timer.fired``: a group flush, an escalation step, a verification, the end of
  flapping, a firing alert's ``endsAt`` passing without a re-send, a cron slot or a
  staggered dispatch.

Event ids a session has already folded are skipped (producers retry).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from streams.core import ack, escalation, fates, grouping, incident, messages, outcomes
from streams.core.acklinks import sign_ack, verify_ack  # noqa: F401  (re-exported for ingest)
from streams.core.actions import EPISODE_LABEL
from streams.core.fold import Fold, effect_id
from streams.core.gates import PASS, STOP, Gate, condition_step, inhibition_sources
from streams.core.state import VERSION as STATE_VERSION
from streams.core.state import AlertState, SessionState, has_seen, new_state, remember, seen_token, upgrade
from streams.core.tables import SilenceChange, Writes, silence_change
from streams.core.timers import slots_between
from streams.model.effects import recorded_timer_effects
from streams.model.records import check_envelope, derived_id
from streams.model.routing import routing_labels
from streams.model.runbooks import RunbookSet, Schedule, builtin_set
from streams.model.silences import SILENCE_TYPES, Silence

if TYPE_CHECKING:
    from streams.core.inhibition import InhibitorIndex
    from streams.settings import AckSettings

__all__ = [
    "Context",
    "Decision",
    "configured_context",
    "Fired",
    "TIMER_VERDICT",
    "Verdict",
    "decide",
    "effect_id",
    "initial_state",
    "recorded_inputs",
    "sign_ack",
    "verify_ack",
]

INPUT_SILENCES = "inputs.silences"
INPUT_INHIBITORS = "inputs.inhibitors"
# The version of decide's own rules, recorded in every decision next to the runbook set's
# and the classifier's: replay can only promise identical decisions for records written by
# the same rules. Bump it whenever a change makes the same inputs give other outputs
# (2: effect ids by subject instead of by index; 3: one-use action links with approve/reject;
# 4: remediation outcomes run the step's on_failure / then, remediate effects carry retries and timeout;
# every event type has a fate: notices for types a runbook names, ``unmatched`` for the rest;
# 5: a group flush an event performs inline, its timer's due time passed, takes its effect ids
# from that timer's event, as when the ticker's timer event carries it;
# 6: an episode's group waits from its first alert's own time, not the session's clock;
# 7: what follows a group's message (repeat, cooldown, escalation chain, verification) counts from when it
# went out, the arrival of the newest alert it tells of when that is later than the session's time; an
# ack, approval or rejection whose signed link names another episode is ``stale-action``, nothing done;
# 8: the signed links of a message an event sends (a flapping notice, a remediation's outcome) last the ack
# TTL from the event's arrival when that is later than the session's time, as a group's message's do; an
# alert whose severity is not the classifier's (a runbook's) is noted ``severity``; a group's alerts are listed
# by the labels that tell them apart; a remediate step's ``{labels.<name>}`` params are filled from the alert;
# 9: a re-send of a firing alert brings its title, text and links as they read now to the next message; alerts
# past a session's cap are counted once each, in the group message's title, count and body alike, and a new
# episode starts its count again; an escalation step is not taken while no alert at or above the runbook's
# escalate_from fires; an alert's `runbook` and `documentation` annotations are links too; the alerts of one
# session in one Alertmanager webhook (ingest's opsloop_post) are told in one message, at the last of them; a
# runbook's cooldown does not hold an urgent alert's message; a verification after remediations that were all
# dry runs escalates nothing).
# Not for a change of the record's layout alone (e.g. timer effects moving from outbox onto the
# record as ``timer_effects``): the Avro schema's fingerprint versions the layout.
DECIDE_VERSION = "9"
SEEN_IDS_KEPT = 64  # per session; enough to absorb producer retries, small enough for the changelog

ACK_TYPES = ("ack", "incident.acknowledged")
HUMAN_RESOLVE_TYPES = ("incident.resolved", "resolve")
APPROVAL_TYPES = ("remediation.approved",)
REJECTION_TYPES = ("remediation.rejected",)
PR_OPEN_TYPES = ("pr.opened", "pr.reopened", "pr.ready_for_review", "pr.review_requested")
PR_PUSH_TYPES = ("pr.synchronize",)
PR_DONE_TYPES = ("pr.closed", "pr.merged")
FAILURE_SUFFIXES = (".failed", ".failure", ".errored")
SUCCESS_SUFFIXES = (".succeeded", ".success", ".recovered", ".fixed")


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one event, as decide sees it."""

    category: str = "other"
    severity: str = "warning"
    confidence: float = 1.0
    classifier: str = "none"
    fallback: bool = False
    severity_confidence: float = 1.0
    # Whether the sender stated the severity / the event kind fixed the category, or the
    # classifier inferred it; and where the severity came from (stated | model | default | rules).
    severity_inferred: bool = False
    category_inferred: bool = False
    severity_basis: str = ""

    @classmethod
    def of(cls, p: Any, *, fallback: bool = False) -> Verdict:
        """The verdict of one classifier prediction (``classifier.prediction.Prediction``); ``fallback``
        flags it (the keyword rules answering for a model that failed)."""
        return cls(
            category=p.category,
            severity=p.severity,
            confidence=float(p.category_p),
            classifier=p.model_version,
            fallback=fallback or bool(p.fallback),
            severity_confidence=float(p.severity_p),
            severity_inferred=bool(getattr(p, "severity_inferred", False)),
            category_inferred=bool(getattr(p, "category_inferred", False)),
            severity_basis=str(getattr(p, "severity_basis", "")),
        )

    def said(self) -> str:
        """How a message shows an inferred severity or category ("" when the sender stated both)."""
        parts = []
        if self.severity_inferred:
            parts.append(
                f"severity {self.severity} inferred ({self.severity_basis or 'model'}, p={self.severity_confidence:.2f})"
            )
        if self.category_inferred:
            parts.append(f"category {self.category} inferred (p={self.confidence:.2f})")
        return "; ".join(parts)


@dataclass(frozen=True)
class Context:
    """Everything decide needs from outside the event, with versions for the record."""

    verdict: Verdict = field(default_factory=Verdict)
    runbooks: RunbookSet = field(default_factory=builtin_set)
    silences: tuple[Silence, ...] = ()
    # Firing alerts of other sessions that can inhibit: (session_key, routing labels); the
    # decide agent hands an InhibitorIndex (iterates as those pairs, looked up by equal labels).
    inhibitors: tuple[tuple[str, Mapping[str, str]], ...] | InhibitorIndex = ()
    ack_base_url: str = ""
    ack_secret: str = field(default="", repr=False)
    ack_ttl_ms: int = 24 * 3_600_000

    @property
    def runbook_set_version(self) -> str:
        return self.runbooks.version


def configured_context(runbooks: RunbookSet, ack: AckSettings | None = None) -> Context:
    """The context configuration gives (the runbook set, ack links); a batch adds the verdict,
    the silences and other sessions' inhibiting alerts. The decide agent and replay build it here."""
    if ack is None:
        return Context(runbooks=runbooks)
    return Context(
        runbooks=runbooks,
        ack_base_url=ack.base_url,
        ack_secret=ack.secret.get_secret_value(),
        ack_ttl_ms=ack.ttl_s * 1000,
    )


@dataclass(frozen=True)
class Fired:
    """A timer that came due before the event and was folded first (see :func:`decide`)."""

    event: dict[str, Any]
    effects: list[dict[str, Any]]
    record: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    state: SessionState
    effects: list[dict[str, Any]]
    record: dict[str, Any]
    # Timers of this session that were due at or before the event's time, folded first,
    # oldest first; each as the timer.fired event the ticker would have promoted.
    fired: tuple[Fired, ...] = ()
    # A silence the event creates or expires; a silence event that cannot be read says why.
    silence: SilenceChange | None = None
    silence_error: str = ""
    inhibit_rules: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @cached_property
    def writes(self) -> Writes:
        """The table writes this decision implies (see :mod:`streams.core.tables`): computed when
        asked, so a shell writing once per session per batch pays for the last decision only."""
        org = self.record["org"]
        rules = self.inhibit_rules
        sources = inhibition_sources(messages.firing_labels(self.state, org), rules) if rules else []
        return Writes(
            session=self.record["session_key"],
            org=org,
            timers=self.state.get("timers") or {},
            inhibitors=sources,
            silences=(self.silence,) if self.silence is not None else (),
        )

    @property
    def all_records(self) -> list[dict[str, Any]]:
        return [f.record for f in self.fired] + [self.record]

    @property
    def all_effects(self) -> list[dict[str, Any]]:
        return [e for f in self.fired for e in f.effects] + list(self.effects)


def initial_state() -> SessionState:
    return new_state()


# -- reading events -------------------------------------------------------------------


def event_title(event: Mapping[str, Any]) -> str:
    labels, annotations = event.get("labels") or {}, event.get("annotations") or {}
    name = labels.get("alertname") or event["type"]
    summary = annotations.get("summary") or annotations.get("title") or ""
    return f"{name}: {summary}" if summary else name


def alert_key(event: Mapping[str, Any]) -> str:
    payload = event.get("payload") or {}
    fingerprint = payload.get("fingerprint") if isinstance(payload, Mapping) else None
    if fingerprint:
        return str(fingerprint)
    labels = event.get("labels") or {}
    return derived_id("alert", *(f"{k}={labels[k]}" for k in sorted(labels)))[:16]


def _alert(
    event: Mapping[str, Any],
    ctx: Context,
    *,
    severity: str | None = None,
    runbook: str | None = None,
    title: str | None = None,
    body: str | None = None,
) -> AlertState:
    v = ctx.verdict
    sev = severity or v.severity
    labels = dict(sorted((event.get("labels") or {}).items()))
    if runbook is None:
        rlabels = routing_labels(
            labels,
            category=v.category,
            severity=sev,
            org=event.get("org", "default"),
            source=event["source"],
            kind=event["kind"],
            event_type=event["type"],
        )
        chosen = ctx.runbooks.select(
            rlabels, category=v.category, severity=sev, event_type=event["type"], kind=event["kind"]
        )
        runbook = chosen.name
        if chosen.severity and severity is None and v.severity_basis != "stated":
            sev = chosen.severity  # the runbook's severity for its types (the sender stated none)
    payload = event.get("payload") or {}
    annotations = event.get("annotations") or {}
    return {
        "status": "firing",
        "severity": sev,
        "category": v.category,
        "runbook": runbook,
        "title": title or event_title(event),
        "labels": labels,
        "type": event["type"],
        "source": event["source"],
        "kind": event["kind"],
        "url": str(payload.get("generator_url") or payload.get("url") or ""),
        "body": body if body is not None else messages.annotation_body(annotations),
        "event_id": event["event_id"],
        "arrived": messages.arrival(event),
        **({"links": own} if (own := messages.annotation_links(annotations)) else {}),
        **({"inferred": v.said()} if v.said() and severity is None else {}),
    }


def _base_type(etype: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if etype.endswith(suffix):
            return etype[: -len(suffix)]
    return etype


# -- the fold -----------------------------------------------------------------------------


TIMER_VERDICT = Verdict(category="other", severity="info", classifier="none")  # timer events are not classified
MAX_FIRED_PER_EVENT = 100  # a guard: timers scheduling due timers cannot loop forever


def decide(state: Mapping[str, Any] | None, event: Mapping[str, Any], ctx: Context, *, owned: bool = False) -> Decision:
    """Fold one event into a session's state; return the new state, effects and the record.

    ``state`` is copied first and never changed, unless the caller passes ``owned=True``:
    it hands over a state of this version that nothing else holds (the state a previous
    decide call returned, which it then drops), and the event is folded into that object
    in place. Outputs are the same either way; the decide agent folds a session's events
    of one batch like this, so the session's state is copied once per batch, not per event.

    An event without a session key, or whose times are out of range (past the year 9999,
    negative), raises :class:`~streams.model.records.InvalidEventError`: the agent dead-letters it.

    Timers of the session that are due at or before the event's time are folded first,
    each as exactly the ``timer.fired`` event the ticker would promote (same event id,
    so the same effect ids and decision record). A session's outcome then depends only
    on its own events in order, not on when the ticker ran: a timer fires before the
    first event past its due time whether the ticker was quick or late, and the
    ticker's copy, when it arrives, is a duplicate. The ticker remains what fires the
    timers of a session that has no further events.
    """
    check_envelope(event)  # no session, or a time no calendar can name: a dead letter, not a poisoned state
    s = cast(SessionState, state) if owned and state and state.get("v") == STATE_VERSION else upgrade(state)
    token = seen_token(event["event_id"])  # once per event: the duplicate check and the fold's remember
    if has_seen(s["seen"], token):
        f = Fold(s, event, ctx, s["clock"])
        f.outcome = "duplicate"
        return Decision(state=s, effects=[], record=_record(f), inhibit_rules=ctx.runbooks.routing.inhibit_rules)
    fired = _fire_due_timers(s, event, ctx)
    f = _fold(s, event, ctx, token)
    change, error, refused = silence_change(event, ctx.silences)
    if error:
        f.note("silence_error", error)
    if refused is not None:  # an input that changed the decision: replay hands it back (recorded_inputs)
        f.used_silences[refused.silence_id] = refused.to_json()
    return Decision(
        state=s,
        effects=f.effects,
        record=_record(f),
        fired=fired,
        silence=change,
        silence_error=error,
        inhibit_rules=ctx.runbooks.routing.inhibit_rules,
    )


def _fold(s: SessionState, event: Mapping[str, Any], ctx: Context, token: str) -> Fold:
    """``token``: the event id's seen_token, which the caller has already checked against ``seen``."""
    s["seen"] = remember(s["seen"], token, SEEN_IDS_KEPT)
    now = max(s["clock"], int(event["occurred_at"]))
    s["clock"] = now
    f = Fold(s, event, ctx, now)
    _dispatch(f)
    return f


def _fire_due_timers(s: SessionState, event: Mapping[str, Any], ctx: Context) -> tuple[Fired, ...]:
    """Fold the session's timers due before ``event`` (by due time, then id), as timer events."""
    from streams.core.timers import timer_event, timer_event_id

    if event["kind"] == "timer":
        payload = event.get("payload") or {}
        limit = (int(payload.get("due_at", event["occurred_at"])), str(payload.get("timer_id", "")))
        inclusive = False
    else:
        limit = (int(event["occurred_at"]), "\uffff")
        inclusive = True
    out: list[Fired] = []
    timer_ctx = None
    while len(out) < MAX_FIRED_PER_EVENT:
        due = sorted(
            (spec["at"], tid)
            for tid, spec in s["timers"].items()
            if (spec["at"], tid) < limit or (inclusive and (spec["at"], tid) <= limit)
        )
        if not due:
            break
        at, tid = due[0]
        if timer_event_id(event["session_key"], tid, at) == event["event_id"]:
            break
        tev = timer_event(
            event["session_key"],
            event.get("org", "default"),
            tid,
            s["timers"][tid],
            received_at=int(event.get("received_at") or event["occurred_at"]),
        )
        token = seen_token(tev["event_id"])
        if has_seen(s["seen"], token):  # folded before (a re-promotion); drop the stale entry
            del s["timers"][tid]
            continue
        if timer_ctx is None:
            timer_ctx = Context(
                TIMER_VERDICT,
                ctx.runbooks,
                ctx.silences,
                ctx.inhibitors,
                ctx.ack_base_url,
                ctx.ack_secret,
                ctx.ack_ttl_ms,
            )
        f = _fold(s, tev, timer_ctx, token)
        out.append(Fired(event=tev, effects=f.effects, record=_record(f)))
    return tuple(out)


def _dispatch(f: Fold) -> None:
    event, ctx = f.event, f.ctx
    kind, etype = event["kind"], event["type"]
    payload = event.get("payload") or {}
    if kind == "timer":
        _on_timer(f, payload)
    elif kind == "telemetry":
        status = payload.get("status", "")
        if payload.get("metric") is not None and payload.get("value") is not None:
            _on_sample(f, payload["metric"], float(payload["value"]))
        elif etype == "alert.firing" or (etype.startswith("alert") and status == "firing"):
            akey = alert_key(event)
            incident.on_trigger(f, akey, _alert(event, ctx))
            _track_ends_at(f, akey, payload)
        elif etype == "alert.resolved" or (etype.startswith("alert") and status == "resolved"):
            incident.on_clear(f, alert_key(event))
    elif kind == "webhook":
        _on_webhook(f, etype, payload)
        fates.after_handlers(f, known=known_webhook_type(etype))
    elif kind == "scan":
        _on_scan(f, payload)
        fates.after_handlers(f, known=True)  # a scan's status says what it means


def known_webhook_type(etype: str) -> bool:
    """Whether :func:`_on_webhook` gives webhooks of this type a meaning (else see :mod:`streams.core.fates`)."""
    return (
        etype
        in (
            *ACK_TYPES,
            *HUMAN_RESOLVE_TYPES,
            *APPROVAL_TYPES,
            *REJECTION_TYPES,
            *SILENCE_TYPES,
            *PR_OPEN_TYPES,
            *PR_PUSH_TYPES,
            *PR_DONE_TYPES,
            *outcomes.OUTCOME_TYPES,
        )
        or etype.endswith(FAILURE_SUFFIXES)
        or etype.endswith(SUCCESS_SUFFIXES)
    )


ENDS_PREFIX = "ends:"


def _track_ends_at(f: Fold, akey: str, payload: Mapping[str, Any]) -> None:
    """Prometheus sends a firing alert with ``endsAt`` in the future and re-sends it before then;
    one not re-sent by its ``endsAt`` has stopped (its sender died): it resolves then, as in
    Alertmanager. Each re-send moves the timer; a resolve cancels it (see incident.on_clear)."""
    ends_at, starts_at = payload.get("ends_at"), payload.get("starts_at")
    alert = f.s["alerts"].get(akey)
    if not isinstance(ends_at, int) or ends_at <= int(starts_at or 0) or alert is None or alert["status"] != "firing":
        return  # no endsAt (Alertmanager's zero time, a webhook), or the alert was not kept (overflow)
    timer_id = f"{ENDS_PREFIX}{akey}"
    pending = f.s["timers"].get(timer_id)
    if pending is not None and pending["at"] >= ends_at:
        return  # a retry or an out-of-order older re-send: never move it earlier
    f.schedule(timer_id, max(ends_at, f.now), "ends", data={"alert": akey})
    f.note("ends_at", ends_at)


def _for_another_episode(f: Fold) -> bool:
    """Whether a human action names an episode (its signed link's) that is not the session's: the link was in
    a message about an incident that has ended, and acting on today's incident is more than it was given
    (an Approve link of yesterday's incident, within its TTL, ran the remediation today's waited on)."""
    named = (f.event.get("labels") or {}).get(EPISODE_LABEL)
    if named is None or named == str(f.s["episode"]):
        return False
    f.note("stale_action", f"sent for incident #{named}; the session is at #{f.s['episode']}: nothing done")
    f.outcome = "stale-action"
    return True


def _on_webhook(f: Fold, etype: str, payload: Mapping[str, Any]) -> None:
    event, ctx = f.event, f.ctx
    actor = str(payload.get("actor") or "")
    if etype in (*ACK_TYPES, *APPROVAL_TYPES, *REJECTION_TYPES) and _for_another_episode(f):
        return
    if etype in ACK_TYPES:
        ack.on_ack(f, actor=actor, source=event["source"])
    elif etype in HUMAN_RESOLVE_TYPES:
        f.note("resolved_by", actor or event["source"])
        incident.resolve_session(f, cause="human", skip_channel="pagerduty" if event["source"] == "pagerduty" else "")
    elif etype in APPROVAL_TYPES:
        ack.on_approval(f, actor)
    elif etype in REJECTION_TYPES:
        ack.on_rejection(f, actor)
    elif etype in outcomes.OUTCOME_TYPES:
        outcomes.on_outcome(f, etype, payload)
    elif etype in SILENCE_TYPES:
        f.note("silence", payload.get("subject", ""))
        f.outcome = etype
    elif etype in PR_OPEN_TYPES:
        incident.on_trigger(f, "pr", _alert(event, ctx, title=_pr_title(event, payload)))
    elif etype in PR_PUSH_TYPES:
        messages.reset_cap(f, "human")
        incident.on_trigger(f, "pr", _alert(event, ctx, title=_pr_title(event, payload)))
    elif etype in PR_DONE_TYPES:
        messages.reset_cap(f, "human")
        incident.on_clear(f, "pr", cause="human")
    elif etype.endswith(FAILURE_SUFFIXES):
        incident.on_trigger(f, _base_type(etype, FAILURE_SUFFIXES), _alert(event, ctx))
    elif etype.endswith(SUCCESS_SUFFIXES):
        incident.on_clear(f, _base_type(etype, SUCCESS_SUFFIXES))


def _pr_title(event: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    subject = payload.get("subject") or event["session_key"]
    title = (event.get("annotations") or {}).get("title") or (event.get("annotations") or {}).get("summary") or ""
    return f"Review requested: {subject}" + (f" {title}" if title else "")


def _on_scan(f: Fold, payload: Mapping[str, Any]) -> None:
    event, ctx = f.event, f.ctx
    status = payload.get("status", "")
    scan_type = payload.get("scan_type", "scan")
    if status == "findings" and payload.get("findings"):
        findings = payload["findings"]
        lines = [
            f"- {x.get('resource', '?')}: {x.get('change_type') or x.get('rule') or ''} {x.get('detail', '')}".rstrip()
            for x in findings[:10]
        ]
        if len(findings) > 10:
            lines.append(f"... and {len(findings) - 10} more")
        what = {"drift": "Drift detected", "compliance": "Compliance findings", "cost": "Cost anomaly"}.get(
            scan_type, "Scan findings"
        )
        title = f"{what}: {len(findings)} in {payload.get('config_id', '')}".rstrip()
        if "scan-failed" in f.s["alerts"]:
            incident.on_clear(f, "scan-failed")
        incident.on_trigger(f, "scan", _alert(event, ctx, title=title, body="\n".join(lines)))
    elif status == "clean":
        incident.on_clear(f, "scan")
    elif status == "failed":
        incident.on_trigger(f, "scan-failed", _alert(event, ctx, title=f"Scan failed: {payload.get('config_id', '')}"))


def _on_sample(f: Fold, metric: str, value: float) -> None:
    event, ctx = f.event, f.ctx
    v = ctx.verdict
    labels = routing_labels(
        event.get("labels") or {},
        category=v.category,
        severity=v.severity,
        org=event.get("org", "default"),
        source=event["source"],
        kind=event["kind"],
        event_type=event["type"],
    )
    runbooks = ctx.runbooks.triggers_for(metric, labels)
    f.note("metric", f"{metric}={value:g}")
    for rb in runbooks:
        trig = rb.trigger
        assert trig is not None
        cond = f.s["cond"].get(rb.name) or {"since": None, "on": False}
        since, on, transition = condition_step(cond["since"], cond["on"], value, f.now, trig)
        f.s["cond"][rb.name] = {"since": since, "on": on}
        f.note(
            f"condition.{rb.name}",
            f"{metric} {trig.operator} {trig.threshold:g}: {'holds' if since is not None else 'no'}",
        )
        if transition == "fire":
            title = f"{metric} {trig.operator} {trig.threshold:g} for {trig.for_ // 1000}s (now {value:g})"
            incident.on_trigger(
                f,
                f"cond:{rb.name}",
                _alert(event, ctx, severity=trig.severity, runbook=rb.name, title=title, body=rb.description),
            )
        elif transition == "clear":
            incident.on_clear(f, f"cond:{rb.name}")
    if runbooks and f.outcome == "recorded":
        f.outcome = "sampled"


def _on_timer(f: Fold, payload: Mapping[str, Any]) -> None:
    s = f.s
    timer_id, purpose = payload.get("timer_id", ""), payload.get("purpose", "")
    f.note("timer", timer_id)
    if purpose == "cron":
        _on_cron(f, payload.get("data") or {})
        return
    pending = s["timers"].get(timer_id)
    if pending is None or pending["at"] != payload.get("due_at"):
        f.outcome = "stale-timer"  # cancelled, rescheduled, or already fired
        return
    del s["timers"][timer_id]
    f.runbook = s.get("runbook") or ""
    if purpose == "group":
        grouping.flush(f)
    elif purpose == "escalation":
        escalation.escalate(f, int(payload.get("step", 0)))
    elif purpose == "verify":
        escalation.verify(f)
    elif purpose == "flap":
        incident.on_flap_timer(f)
    elif purpose == "ends":
        f.note("ended", "endsAt passed without a re-send")
        incident.on_clear(f, (payload.get("data") or {}).get("alert", ""), cause="ends_at")
    elif purpose == "dispatch":
        data = payload.get("data") or {}
        schedule = _schedule(f, data.get("schedule", ""))
        if schedule is not None:
            _dispatch_target(f, schedule, data.get("target", ""), int(data.get("slot", 0)))
    else:
        f.outcome = "stale-timer"


def _schedule(f: Fold, name: str) -> Schedule | None:
    for schedule in f.ctx.runbooks.schedules:
        if schedule.name == name:
            return schedule
    f.outcome = "unknown-schedule"
    return None


def _on_cron(f: Fold, data: Mapping[str, str]) -> None:
    """A cron slot: coalesce missed slots, skip while the previous run may still run, stagger targets."""
    schedule = _schedule(f, data.get("schedule", ""))
    if schedule is None:
        return
    f.runbook = f"schedule:{schedule.name}"
    slot = int(data.get("slot", 0))
    cron = f.s["cron"]
    last = cron.get("last")
    if last is not None and slot <= last:
        f.outcome = "repeat"
        return
    if last is not None:
        missed = len(slots_between(schedule.cron, schedule.timezone, last, slot, limit=10_000)) - 1
        if missed > 0:
            f.note("missed_slots", missed)
    cron["last"] = slot
    running_until = cron.get("running_until", 0)
    if f.now < running_until:
        f.check(Gate("overlap", STOP, f"previous run may still be running until {running_until}"))
        f.outcome = "skipped"
        return
    f.check(Gate("overlap", PASS))
    cron["running_until"] = f.now + schedule.max_runtime
    for index, target in enumerate(schedule.targets):
        at = f.now + index * schedule.stagger
        if at <= f.now:
            _dispatch_target(f, schedule, target, slot)
        else:
            f.schedule(
                f"dispatch:{slot}:{index}",
                at,
                "dispatch",
                data={"schedule": schedule.name, "target": target, "slot": str(slot)},
            )
    f.outcome = "dispatched"


def _dispatch_target(f: Fold, schedule: Schedule, target: str, slot: int) -> None:
    f.runbook = f"schedule:{schedule.name}"
    params = {"schedule": schedule.name, "slot": str(slot)}
    if target:
        params["target"] = target
    if schedule.remediate is not None:
        step = schedule.remediate
        f.remediate(
            action=step.action,
            endpoint=step.endpoint,
            method=step.method,
            params={**step.params, **params},
            dry_run=step.dry_run,
            requires_approval=step.requires_approval,
        )
    if schedule.notify_receiver:
        routing = f.ctx.runbooks.routing
        f.notify(
            channel=routing.channel_of(schedule.notify_receiver),
            receiver=schedule.notify_receiver,
            severity="info",
            title=schedule.title + (f": {target}" if target else ""),
            body=f"Scheduled run of {schedule.name}.",
            fields=params,
            links=[],
            action="trigger",
            dedupe_key=derived_id("dedupe", f.event["session_key"], schedule.name, str(slot), target),
        )
    f.outcome = "dispatched"


def _record(f: Fold) -> dict[str, Any]:
    event, verdict = f.event, f.ctx.verdict
    matched = dict(f.matched)
    matched["severity_confidence"] = f"{verdict.severity_confidence:.4f}"
    if verdict.severity_basis:
        matched["severity_basis"] = verdict.severity_basis
    if verdict.severity_inferred:
        matched["severity_inferred"] = "true"
    if verdict.category_inferred:
        matched["category_inferred"] = "true"
    if f.used_silences:
        matched[INPUT_SILENCES] = json.dumps([f.used_silences[k] for k in sorted(f.used_silences)], sort_keys=True)
    if f.used_inhibitors:
        matched[INPUT_INHIBITORS] = json.dumps(f.used_inhibitors, sort_keys=True)
    matched = dict(sorted(matched.items()))
    return {
        # A duplicate's record must not take the id of the decision it repeats.
        "decision_id": derived_id("decision", event["event_id"], *(("duplicate",) if f.outcome == "duplicate" else ())),
        "event_id": event["event_id"],
        "session_key": event["session_key"],
        "org": event.get("org", "default"),
        "kind": event["kind"],
        "type": event["type"],
        "decided_at": int(event["occurred_at"]),
        "category": verdict.category,
        "severity": verdict.severity,
        "confidence": float(verdict.confidence),
        "classifier": verdict.classifier,
        "fallback": verdict.fallback,
        "runbook": f.runbook,
        "runbook_set_version": f.ctx.runbooks.version,
        "decide_version": DECIDE_VERSION,
        "gates": list(f.gates),
        "outcome": f.outcome,
        "effect_ids": [e["effect_id"] for e in f.effects],
        "matched": matched,
        # no sink acts on these: they ride here instead of on outbox (streams/model/effects.py)
        "timer_effects": recorded_timer_effects(f.effects),
    }


def recorded_inputs(records: Iterable[Mapping[str, Any]], base: Context) -> Context:
    """``base`` with the outside inputs that the records of one decide call say were used (for replay).

    decide records the silences that muted something and the other sessions' alerts
    that inhibited something. Handing decide the union of those over the records one
    call produced (its event's and the timers folded before it), in the order the
    agent builds its context, gives the same decisions: an input that stopped nothing
    changed nothing.
    """
    from streams.model.silences import silence_from_json

    silences: dict[str, Any] = {}
    inhibitors: dict[str, tuple[str, dict[str, str]]] = {}
    for record in records:
        matched = record.get("matched") or {}
        for raw in json.loads(matched.get(INPUT_SILENCES, "[]")):
            silences.setdefault(raw["id"], silence_from_json(raw))
        for key, labels in json.loads(matched.get(INPUT_INHIBITORS, "[]")):
            inhibitors.setdefault(json.dumps([key, sorted(labels.items())]), (key, labels))
    ordered = tuple(inhibitors[k] for k in sorted(inhibitors, key=lambda k: (json.loads(k)[0], json.loads(k)[1])))
    return replace(base, silences=tuple(silences[k] for k in sorted(silences)), inhibitors=ordered)


def state_bytes(state: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a state (what determinism is checked on)."""
    return json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
