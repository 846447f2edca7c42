"""decide(state, event, ctx) -> Decision: the pure fold at the centre of opsloop.

No I/O, no wall clock, no randomness: time is the event's own ``occurred_at``, and
everything from outside (the classifier's verdict, the runbook set and routing with
their versions) arrives in ``ctx``. Same inputs, same outputs, byte for byte, which
is what makes replay and audit cheap. Effect ids derive from the event id and the
effect's position, so re-processing an event after a crash yields the same ids and
the sinks' ledger delivers each once.

This is the first, deliberately small fold: it remembers the event ids a session has
seen (producers retry), notifies on a firing alert and resolves on a resolved one.
Runbooks and policy gates build on the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from streams.records import derived_id

SEEN_IDS_KEPT = 64  # per session; enough to absorb producer retries, small enough for the changelog


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one event, as decide sees it."""

    category: str = "other"
    severity: str = "warning"
    confidence: float = 1.0
    classifier: str = "none"
    fallback: bool = False


@dataclass(frozen=True)
class Context:
    """Everything decide needs from outside the event, with versions for the record."""

    verdict: Verdict = field(default_factory=Verdict)
    runbook_set_version: str = "builtin-0"
    default_receiver: str = "log"
    default_channel: str = "log"


@dataclass(frozen=True)
class Decision:
    state: dict[str, Any]
    effects: list[dict[str, Any]]
    record: dict[str, Any]


def effect_id(event_id: str, position: int) -> str:
    return derived_id("effect", event_id, str(position))


def initial_state() -> dict[str, Any]:
    return {"seen": [], "firing": False, "notifications": 0}


def _title(event: Mapping[str, Any]) -> str:
    labels, annotations = event["labels"], event["annotations"]
    name = labels.get("alertname") or event["type"]
    summary = annotations.get("summary") or annotations.get("description") or ""
    return f"{name}: {summary}" if summary else name


def _notify(event: Mapping[str, Any], ctx: Context, position: int, action: str) -> dict[str, Any]:
    labels = event["labels"]
    return {
        "effect_id": effect_id(event["event_id"], position),
        "event_id": event["event_id"],
        "session_key": event["session_key"],
        "org": event["org"],
        "type": "notify",
        "created_at": event["occurred_at"],
        "runbook": "",
        "notify": {
            "channel": ctx.default_channel,
            "receiver": ctx.default_receiver,
            "severity": ctx.verdict.severity,
            "title": _title(event),
            "body": event["annotations"].get("description", ""),
            "fields": {k: labels[k] for k in sorted(labels) if k != "alertname"},
            "links": [],
            "dedupe_key": event["session_key"],
            "thread_key": event["session_key"],
            "action": action,
        },
        "timer": None,
        "cancel": None,
        "remediate": None,
    }


def decide(state: Mapping[str, Any] | None, event: Mapping[str, Any], ctx: Context) -> Decision:
    """Fold one event into a session's state; return the new state, effects and the record."""
    prior = dict(state) if state else initial_state()
    seen = list(prior.get("seen", []))
    effects: list[dict[str, Any]] = []
    if event["event_id"] in seen:
        outcome = "duplicate"
        new_state = prior
    else:
        new_state = {**prior, "seen": (seen + [event["event_id"]])[-SEEN_IDS_KEPT:]}
        etype = event["type"]
        if event["kind"] == "telemetry" and etype == "alert.firing":
            effects.append(_notify(event, ctx, 0, "trigger"))
            new_state.update(firing=True, notifications=prior.get("notifications", 0) + 1)
            outcome = "notified"
        elif event["kind"] == "telemetry" and etype == "alert.resolved" and prior.get("firing"):
            effects.append(_notify(event, ctx, 0, "resolve"))
            new_state.update(firing=False)
            outcome = "resolved"
        else:
            outcome = "recorded"
    verdict = ctx.verdict
    record = {
        "decision_id": derived_id("decision", event["event_id"]),
        "event_id": event["event_id"],
        "session_key": event["session_key"],
        "org": event["org"],
        "kind": event["kind"],
        "type": event["type"],
        "decided_at": event["occurred_at"],
        "category": verdict.category,
        "severity": verdict.severity,
        "confidence": float(verdict.confidence),
        "classifier": verdict.classifier,
        "fallback": verdict.fallback,
        "runbook": "",
        "runbook_set_version": ctx.runbook_set_version,
        "gates": [],
        "outcome": outcome,
        "effect_ids": [e["effect_id"] for e in effects],
    }
    return Decision(state=new_state, effects=effects, record=record)
