"""The incidents table: one row per session, folded from its decisions and events.

``fold`` is pure: an incident row (or None) and one decision in, the new row out.
``fold_batch`` runs inside the projector's transaction (:func:`streams.audit.store.write_batch`)
on the records that transaction newly inserted, so a record folded once is never
folded again (idempotent by record id) and the rows move with the offsets.

Status from a decision's outcome:

=============================================  ============
notified, grouped, escalated, flapping-notice  firing (an acknowledged incident stays acknowledged)
acknowledged                                   acknowledged
suppressed, with the silence gate stopping it  silenced
suppressed (another gate) or flapping, of an   firing (acknowledged stays so): the alert fires, told or not
alert firing
resolved, resolved-quietly                     resolved
anything else (recorded, repeat, ...)          unchanged; no row is created for it
=============================================  ============
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa

from streams.audit.models import EventRow, IncidentRow
from streams.db import dialect_insert
from streams.model.taxonomy import SEVERITY_RANK

FIRING_OUTCOMES = frozenset({"notified", "grouped", "escalated", "flapping-notice"})
RESOLVED_OUTCOMES = frozenset({"resolved", "resolved-quietly"})
# An alert firing (again) that a gate kept quiet (a cooldown, the cap, a dedupe window, flapping): it fires all
# the same. Its incident read "resolved" for the 30 minutes of a runbook's cooldown, while amtool listed it active.
QUIET_FIRING_OUTCOMES = frozenset({"suppressed", "flapping"})
STATUSES = ("firing", "acknowledged", "silenced", "resolved")
# The distinct label sets an episode keeps (the most recent): a group of pods, disks or nodes is one
# incident, and a filter on one of them must find it, not only on the alert that came last.
MAX_ALERTS = 100
# ... and no more than this many characters of names and values together (an alert's labels may hold 4,096
# characters each: 100 of the largest made a row of megabytes, rewritten by every decision of the session)
MAX_ALERTS_CHARS = 65_536
COLUMNS = (
    "session_key",
    "org",
    "status",
    "severity",
    "category",
    "runbook",
    "labels",
    "alerts",
    "first_seen",
    "last_seen",
    "last_notified_at",
    "last_receivers",
    "acked_by",
    "acked_at",
    "silenced_by",
    "last_outcome",
    "last_decision_id",
)


def _silence_stop(decision: Mapping[str, Any]) -> str | None:
    """What muted this decision's notification: the silence gate's reason, or the inhibiting alert (an
    incident an inhibit rule muted read "firing" like one that paged); None when neither stopped it."""
    matched = decision.get("matched") or {}
    for gate in decision.get("gates") or []:
        if gate.get("gate") == "silence" and gate.get("verdict") == "stop":
            return str(matched.get("silence") or gate.get("reason") or "silence")
    for gate in decision.get("gates") or []:
        if gate.get("gate") == "inhibit" and gate.get("verdict") == "stop":
            return f"inhibited: {matched.get('inhibit') or gate.get('reason') or 'an inhibit rule'}"
    return None


def status_of(decision: Mapping[str, Any], current: str | None) -> str | None:
    """The status a decision moves its incident to, or None when it says nothing about it."""
    outcome = decision.get("outcome")
    if outcome in RESOLVED_OUTCOMES:
        return "resolved"
    if outcome == "acknowledged":
        return "acknowledged"
    if outcome == "suppressed" and _silence_stop(decision) is not None:
        return "silenced"
    if outcome in FIRING_OUTCOMES or (decision.get("type") == "alert.firing" and outcome in QUIET_FIRING_OUTCOMES):
        return "acknowledged" if current == "acknowledged" else "firing"
    return None


def fold(
    row: Mapping[str, Any] | None,
    decision: Mapping[str, Any],
    labels: Mapping[str, Any],
    received_at: int | None = None,
) -> dict[str, Any] | None:
    """The incident after ``decision`` (whose event carried ``labels`` and reached ingest at ``received_at``);
    None: still no incident."""
    current = row["status"] if row else None
    status = status_of(decision, current)
    if row is None and status is None:
        return None
    at = int(decision["decided_at"])
    matched = decision.get("matched") or {}
    out: dict[str, Any] = (
        dict(row)
        if row
        else {
            "session_key": decision["session_key"],
            "org": decision.get("org", "default"),
            "status": status,
            "severity": decision.get("severity", ""),
            "category": decision.get("category", ""),
            "runbook": decision.get("runbook", ""),
            "labels": {},
            "alerts": [],
            "first_seen": at,
            "last_seen": at,
            "last_notified_at": None,
            "last_receivers": [],
            "acked_by": None,
            "acked_at": None,
            "silenced_by": None,
        }
    )
    label_set = {str(k): str(v) for k, v in labels.items()}
    out["labels"] = {**out["labels"], **label_set}
    if current == "resolved" and status not in (None, "resolved"):  # a new episode: its own alerts
        out["alerts"] = []
    out["alerts"] = with_alert(out.get("alerts") or [], label_set)
    out["first_seen"] = min(out["first_seen"], at)
    if decision.get("kind") != "timer":  # a timer firing is not the alert being seen again
        # when it was seen: Prometheus re-sends a firing alert every minute with its first startsAt (the
        # decision's time), and "last seen" stood at that while it kept coming
        out["last_seen"] = max(out["last_seen"], at, int(received_at or 0))
    out["last_outcome"] = decision["outcome"]
    out["last_decision_id"] = decision["decision_id"]
    receivers = [r for r in str(matched.get("receivers", "")).split(",") if r]
    if receivers:
        out["last_notified_at"] = at
        out["last_receivers"] = receivers
    if status is None:
        return out
    if current == "resolved" and status != "resolved":  # a new episode: the old ack and silence are history
        out["acked_by"] = out["acked_at"] = None
    # Severity and category are the alert's: only a decision on the alert firing (or muted) says
    # them again. A timer's flush, an acknowledgement and a resolution carry their own event's
    # verdict (info / other), which had turned an urgent incident "info" once it was notified.
    says_what_it_is = decision.get("kind") != "timer" and status in ("firing", "silenced")
    if says_what_it_is and decision.get("category"):
        out["category"] = decision["category"]
    # The most severe its alerts have been in this incident: a warning alert arriving after the critical
    # one of the same session turned it "warning" in every list, and `severity="urgent"` missed it. A
    # runbook's severity (`agent.failed` fires as urgent) is decide's note, the record's the classifier's.
    severity = str(matched.get("severity") or decision.get("severity") or "")
    if says_what_it_is and severity:
        new_episode = current in (None, "resolved")
        if new_episode or SEVERITY_RANK.get(severity, -1) > SEVERITY_RANK.get(out.get("severity") or "", -1):
            out["severity"] = severity
    if decision.get("runbook"):
        out["runbook"] = decision["runbook"]
    if status == "acknowledged" and current != "acknowledged":
        out["acked_by"] = str(matched.get("acked_by", "")) or None
        out["acked_at"] = at
    out["silenced_by"] = _silence_stop(decision) if status == "silenced" else None
    out["status"] = status
    return out


def with_alert(alerts: Sequence[Mapping[str, str]], labels: Mapping[str, str]) -> list[dict[str, str]]:
    """``alerts`` with ``labels`` as the most recent (moved to the end if there already), the oldest dropped past
    MAX_ALERTS; an empty label set (a timer's, an ack's event) is not an alert."""
    kept = [dict(a) for a in alerts if a != labels]
    if labels:
        kept.append(dict(labels))
    kept = kept[-MAX_ALERTS:]
    size = [sum(len(k) + len(v) for k, v in a.items()) for a in kept]
    while len(kept) > 1 and sum(size) > MAX_ALERTS_CHARS:
        kept.pop(0)
        size.pop(0)
    return kept


def common_labels(row: Mapping[str, Any]) -> dict[str, str]:
    """The labels every alert of the incident's episode shares (what a silence of the whole incident names, as
    Alertmanager's group labels); an incident from before its alerts were kept: its labels."""
    alerts = row.get("alerts") or [row.get("labels") or {}]
    first, *rest = alerts
    return {str(k): str(v) for k, v in first.items() if all(a.get(k) == v for a in rest)}


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def fold_batch(conn: sa.Connection, events: Sequence[Mapping[str, Any]], decisions: Sequence[Mapping[str, Any]]) -> int:
    """Fold newly stored events and decisions (in Kafka order) into ``incidents``; returns rows written."""
    sessions = sorted({d["session_key"] for d in decisions} | {e["session_key"] for e in events})
    if not sessions:
        return 0
    t = cast(sa.Table, IncidentRow.__table__)  # a mapped class: a Table
    rows: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sessions):
        for r in conn.execute(sa.select(t).where(t.c.session_key.in_(chunk))):
            rows[r.session_key] = dict(r._mapping)
    labels_of = {e["event_id"]: e.get("labels") or {} for e in events}
    received = {e["event_id"]: e.get("received_at") for e in events}
    missing = sorted({d["event_id"] for d in decisions} - set(labels_of))
    for chunk in _chunks(missing):
        found = conn.execute(
            sa.select(EventRow.event_id, EventRow.record["labels"], EventRow.received_at).where(
                EventRow.event_id.in_(chunk)
            )
        )
        for eid, labels, received_at in found:
            labels_of[eid], received[eid] = labels or {}, received_at
    changed: set[str] = set()
    for e in events:  # an event projected after its decision still brings its labels
        row = rows.get(e["session_key"])
        labels = e.get("labels") or {}
        if row is not None and labels:
            label_set = {str(k): str(v) for k, v in labels.items()}
            merged, alerts = {**row["labels"], **label_set}, with_alert(row.get("alerts") or [], label_set)
            if merged != row["labels"] or alerts != row.get("alerts"):
                row["labels"], row["alerts"] = merged, alerts
                changed.add(e["session_key"])
    for d in decisions:
        new = fold(rows.get(d["session_key"]), d, labels_of.get(d["event_id"], {}), received.get(d["event_id"]))
        if new is not None:
            rows[d["session_key"]] = new
            changed.add(d["session_key"])
    if not changed:
        return 0
    stmt = dialect_insert(conn, t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["session_key"], set_={c: stmt.excluded[c] for c in COLUMNS if c != "session_key"}
    )
    conn.execute(stmt, [{c: rows[k][c] for c in COLUMNS} for k in sorted(changed)])
    return len(changed)
