"""A session's timeline from its audit rows: pure, for `opsloop audit SESSION`.

Each event is followed by what opsloop made of it: the classification, the
runbook, every gate's verdict, the outcome, the effects, and each delivery of each
effect with its status and attempts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.model.records import utc_text

# The notes decide keeps of who acted, and how the timeline says it.
ACTED = {"acked_by": "acknowledged", "approved_by": "approved", "rejected_by": "rejected", "resolved_by": "resolved"}


def build(rows: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Join events, decisions, effects and deliveries of one session into entries."""
    decisions = {d["event_id"]: d for d in rows.get("decisions", [])}
    # An event's effects in the order decide made them (its decision's effect_ids), any others after:
    # the rows come in Kafka order, but its timer effects are stored from the decision record and the
    # rest from outbox (streams/model/effects.py), two topics whose offsets say nothing of each other.
    decided: dict[str, dict[str, int]] = {}
    for d in rows.get("decisions", []):
        if d.get("effect_ids") and d["event_id"] not in decided:  # not a duplicate's empty list
            decided[d["event_id"]] = {eid: i for i, eid in enumerate(d["effect_ids"])}
    effects_by_event: dict[str, list[dict[str, Any]]] = {}
    for effect in rows.get("effects", []):
        effects_by_event.setdefault(effect["event_id"], []).append(effect)
    for event_id, effects in effects_by_event.items():
        rank = decided.get(event_id, {})
        effects.sort(key=lambda e: rank.get(e["effect_id"], len(rank)))
    deliveries: dict[str, list[dict[str, Any]]] = {}
    for receipt in rows.get("deliveries", []):
        deliveries.setdefault(receipt["effect_id"], []).append(receipt)
    entries = []
    for event in rows.get("events", []):
        decision = decisions.get(event["event_id"])
        entry: dict[str, Any] = {
            "at": event["occurred_at"],
            "event_id": event["event_id"],
            "kind": event["kind"],
            "type": event["type"],
            "source": event["source"],
            "labels": event.get("labels", {}),
            "decision": None,
            "effects": [],
        }
        if decision:
            entry["decision"] = {
                key: decision.get(key)
                for key in (
                    "category",
                    "severity",
                    "confidence",
                    "classifier",
                    "fallback",
                    "runbook",
                    "runbook_set_version",
                    "outcome",
                    "gates",
                )
            }
            matched = decision.get("matched") or {}
            if str(matched.get("episode", "")).isdigit():  # the incident (the session's n-th) it was decided in
                entry["decision"]["episode"] = int(matched["episode"])
            # Who acted (a Slack user, "signed link", a PagerDuty webhook...), as decide noted it.
            acted = {verb: matched[key] for key, verb in ACTED.items() if matched.get(key)}
            if acted:
                entry["decision"]["by"] = acted
            if matched.get("severity_inferred") == "true" or matched.get("category_inferred") == "true":
                entry["decision"]["inferred"] = {
                    "severity": matched.get("severity_inferred") == "true",
                    "category": matched.get("category_inferred") == "true",
                    "basis": matched.get("severity_basis", ""),
                    "severity_confidence": matched.get("severity_confidence", ""),
                }
            if matched.get("remediation_result"):  # a remediation's outcome came back (streams/core/outcomes.py)
                entry["decision"]["remediation"] = {
                    ("action" if k == "remediation" else k.removeprefix("remediation_")): v
                    for k, v in matched.items()
                    if k.startswith("remediation")
                }
        for effect in effects_by_event.get(event["event_id"], []):
            notify = effect.get("notify") or {}
            remediate = effect.get("remediate") or {}
            entry["effects"].append(
                {
                    "effect_id": effect["effect_id"],
                    "type": effect["type"],
                    "channel": notify.get("channel"),
                    "receiver": notify.get("receiver"),
                    "action": notify.get("action") or remediate.get("action"),
                    "title": notify.get("title"),
                    "timer": effect.get("timer"),
                    "deliveries": [
                        {
                            k: r.get(k)
                            for k in ("channel", "receiver", "status", "attempts", "http_status", "latency_ms", "error")
                        }
                        for r in deliveries.get(effect["effect_id"], [])
                    ],
                }
            )
        entries.append(entry)
    return entries


def _time(ms: int) -> str:
    return utc_text(ms)


def render(session_key: str, entries: list[dict[str, Any]]) -> str:
    """The human-readable table."""
    if not entries:
        return f"no events recorded for session {session_key!r}"
    lines = [f"session {session_key}: {len(entries)} events", ""]
    for e in entries:
        lines.append(f"{_time(e['at'])}  {e['type']:<24} {e['source']:<12} {e['event_id'][:16]}")
        d = e["decision"]
        if d is None:
            lines.append("    (no decision recorded yet)")
        else:
            fallback = " (keyword fallback)" if d.get("fallback") else ""
            lines.append(
                f"    classified {d['category']}/{d['severity']} p={d['confidence']:.2f} by {d['classifier']}{fallback}; "
                f"runbook {d['runbook'] or '-'} (set {d['runbook_set_version'] or '-'}); outcome {d['outcome']}"
            )
            for verb, who in (d.get("by") or {}).items():
                lines.append(f"    {verb} by {who}")
            inferred = d.get("inferred")
            if inferred:
                # the basis and the probability are the severity's: shown only when it was inferred
                said = ["category inferred by the classifier"] if inferred["category"] else []
                if inferred["severity"]:
                    basis = f" ({inferred['basis']})" if inferred.get("basis") else ""
                    said.append(f"severity inferred{basis}, p={inferred['severity_confidence']}")
                lines.append("    " + "; ".join(said or ["stated by the sender"]))
            rem = d.get("remediation")
            if rem:
                attempts = f" after {rem['attempts']} attempt(s)" if rem.get("attempts") else ""
                reason = f": {rem['reason']}" if rem.get("reason") else ""
                lines.append(f"    remediation {rem.get('action', '?')} {rem['result']}{attempts}{reason}")
                if rem.get("next"):
                    lines.append(f"    then runs {rem['next']}")
            for gate in d.get("gates") or []:
                reason = f": {gate['reason']}" if gate.get("reason") else ""
                lines.append(f"      gate {gate['gate']:<14} {gate['verdict']}{reason}")
        for f in e["effects"]:
            target = f"{f['channel']}:{f['receiver']}" if f["channel"] else ""
            lines.append(f"    -> {f['type']} {target} {f['action'] or ''} {f['title'] or ''}".rstrip())
            for r in f["deliveries"]:
                status = f"HTTP {r['http_status']}" if r.get("http_status") else ""
                error = f" ({r['error']})" if r.get("error") else ""
                lines.append(
                    f"       delivered? {r['status']} after {r['attempts']} attempt(s) {status}{error}".rstrip()
                )
    return "\n".join(lines)
