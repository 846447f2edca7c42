"""The pure half of replay: re-fold recorded traffic and compare with what was recorded.

No Kafka here. :mod:`streams.replay` reads the topics and hands this module the
event records (by id) and the decision records in the order the decide agent wrote
them; everything else is a function of those.

Choices the issue left open (see the report in the README):

* ORDER: a session's events are folded in the order of its recorded decisions (the
  ``decisions`` topic is keyed by session, so one partition holds a session's order,
  including how the agent interleaved the four events.* topics).
* STATE: every session is folded from the earliest retained record, and only the
  decisions whose event lies in [since, until] are compared (the agent keeps no
  state snapshot outside its changelog, which holds only the latest state).
* RESTARTS: a crashed worker may re-process events whose state write was lost; its
  decisions then repeat events already decided. Near such repeats the state the
  worker re-read is reconstructed (see :func:`replay`), so the re-processing is
  reproduced too.
* CONTEXT: the verdict is the one recorded in the decision (category, severity,
  confidences, classifier version, fallback), unless a what-if names a model; timer
  events get the agent's fixed timer verdict. Silences and inhibiting alerts are
  global tables in the agent, read once per batch; replay rebuilds them from the
  folded decisions in record-timestamp order and lets a change made by a decision
  be seen by decisions recorded strictly later. That is exact while those tables
  do not change between two decisions of one batch (see ``ReplayReport.global_changes``).
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from streams.decide import Context, Verdict, decide
from streams.policy import inhibition_sources
from streams.silences import SILENCE_CREATED, SILENCE_TYPES, Silence, SilenceError, silence_from_event

TIMER_VERDICT = Verdict(category="other", severity="info", classifier="none")  # as agents/decide.py

Classify = Callable[[Sequence[Mapping[str, Any]]], list[Verdict]]


@dataclass(frozen=True)
class RecordedDecision:
    """A decision record as read from the ``decisions`` topic, with where it was."""

    value: dict[str, Any]
    partition: int
    offset: int
    timestamp: int


@dataclass
class Difference:
    event_id: str
    session_key: str
    fields: list[str]
    recorded: dict[str, Any]
    replayed: dict[str, Any]


@dataclass
class ReplayReport:
    compared: int = 0
    identical: int = 0
    differences: list[Difference] = field(default_factory=list)
    by_field: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    events_without_decision: list[str] = field(default_factory=list)
    decisions_without_event: list[str] = field(default_factory=list)
    runbook_versions: Counter = field(default_factory=Counter)  # recorded versions of the compared decisions
    runbook_version_used: str = ""
    rewinds: int = 0  # decisions folded again from an earlier state (a worker re-processed them)
    global_changes: int = 0  # silence / inhibitor changes rebuilt from the replay
    folded: int = 0
    rewind_plan: dict[tuple[str, int], int] = field(default_factory=dict)  # (session, position) -> history index
    # decision_id -> (replayed record, replayed effects), for what-if comparisons
    results: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=dict)

    @property
    def identical_pct(self) -> float:
        return 100.0 * self.identical / self.compared if self.compared else 100.0

    def summary(self) -> dict[str, Any]:
        return {
            "compared": self.compared, "identical": self.identical, "identical_pct": round(self.identical_pct, 3),
            "differing": len(self.differences), "by_field": dict(self.by_field), "by_kind": dict(self.by_kind),
            "events_without_decision": len(self.events_without_decision),
            "decisions_without_event": len(self.decisions_without_event),
            "runbook_versions_recorded": dict(self.runbook_versions), "runbook_version_used": self.runbook_version_used,
            "rewinds": self.rewinds, "global_changes": self.global_changes, "folded": self.folded,
        }


def differing_fields(recorded: Mapping[str, Any], replayed: Mapping[str, Any]) -> list[str]:
    """Names of the fields that differ; maps are compared per key (``matched.receivers``)."""
    out = []
    for key in sorted(set(recorded) | set(replayed)):
        a, b = recorded.get(key), replayed.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif _norm(a) != _norm(b):
            out.append(key)
    return out


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True)) if isinstance(value, (list, dict)) else value


def recorded_verdict(record: Mapping[str, Any]) -> Verdict:
    """The verdict the agent used, rebuilt from the decision record."""
    if record.get("kind") == "timer":
        return TIMER_VERDICT
    matched = record.get("matched") or {}
    return Verdict(category=record["category"], severity=record["severity"], confidence=float(record["confidence"]),
                   classifier=record["classifier"], fallback=bool(record["fallback"]),
                   severity_confidence=float(matched.get("severity_confidence", "1")))


def ordered(decisions: Iterable[RecordedDecision]) -> list[RecordedDecision]:
    """All decisions in one order: each partition in offset order, partitions merged by timestamp."""
    parts: dict[int, list[RecordedDecision]] = defaultdict(list)
    for d in decisions:
        parts[d.partition].append(d)
    lists = [sorted(p, key=lambda d: d.offset) for p in parts.values()]
    return list(heapq.merge(*lists, key=lambda d: (d.timestamp, d.partition, d.offset)))


class GlobalTables:
    """Silences and inhibiting alerts as the agent's global tables hold them, rebuilt in order."""

    def __init__(self, inhibit_rules: Sequence[Any]) -> None:
        self.inhibit_rules = inhibit_rules
        self.silences: dict[str, Silence] = {}
        self.inhibitors: dict[str, list] = {}
        self.pending: list[tuple[int, Callable[[], bool]]] = []

    def context(self, base: Context, timestamp: int) -> Context:
        """The context a decision recorded at ``timestamp`` saw: changes recorded strictly before it."""
        while self.pending and self.pending[0][0] < timestamp:
            heapq.heappop(self.pending)[2]()  # type: ignore[misc]
        inhibiting = tuple((k, labels) for k, v in sorted(self.inhibitors.items()) if v for labels in v) if self.inhibit_rules else ()
        return replace(base, silences=tuple(s for _, s in sorted(self.silences.items())), inhibitors=inhibiting)

    def after(self, timestamp: int, seq: int, event: Mapping[str, Any], record: Mapping[str, Any],
              state: Mapping[str, Any]) -> int:
        """Queue the table changes a decision makes; returns how many."""
        changes = 0
        if event["type"] in SILENCE_TYPES and record["outcome"] != "duplicate":
            try:
                etype, silence, sid = silence_from_event(event)
            except SilenceError:
                etype, silence, sid = "", None, ""
            if sid:
                def apply_silence(sid=sid, etype=etype, silence=silence) -> bool:
                    if etype == SILENCE_CREATED and silence is not None:
                        self.silences[sid] = silence
                    else:
                        self.silences.pop(sid, None)
                    return True
                heapq.heappush(self.pending, (timestamp, seq * 2, apply_silence))  # type: ignore[arg-type]
                changes += 1
        if self.inhibit_rules:
            session = event["session_key"]
            sources = inhibition_sources(state.get("alerts", {}).values(), self.inhibit_rules)
            def apply_inhibitors(session=session, sources=sources) -> bool:
                if sources:
                    self.inhibitors[session] = sources
                else:
                    self.inhibitors.pop(session, None)
                return True
            if sources or session in self.inhibitors:
                heapq.heappush(self.pending, (timestamp, seq * 2 + 1, apply_inhibitors))  # type: ignore[arg-type]
                changes += 1
        return changes


LOOKAHEAD = 30  # decisions a reconstructed restart state must also reproduce


def replay(events: Mapping[str, dict[str, Any]], decisions: Sequence[RecordedDecision], base: Context,
           in_window: Callable[[str], bool], *, classify: Classify | None = None,
           compare_sessions: Callable[[str], bool] = lambda _: True, keep_results: bool = False,
           rewind_plan: Mapping[tuple[str, int], int] | None = None) -> ReplayReport:
    """Fold every recorded decision's event again and compare the decisions in the window.

    ``events``: event id -> decoded event; ``in_window(event_id)``: whether that decision
    is compared; ``classify``: re-classify with another model (what-if), else the
    recorded verdicts are used.

    Restarts: a worker that died re-reads a session's state from its changelog, which
    may be older than the last decision it recorded, and then re-processes events
    (their decisions repeat, as ``duplicate`` or decided again). Which state it
    re-read is not recorded; near such repeats, a decision the running state does not
    reproduce is folded from the latest earlier state of the session that reproduces
    it and the next decisions too (``rewinds`` counts them). Elsewhere no search is
    made, so a real difference is never explained away. A what-if passes the
    baseline's ``rewind_plan`` so its fold restarts from the same states.
    """
    report = ReplayReport(runbook_version_used=base.runbooks.version)
    tables = GlobalTables(base.runbooks.routing.inhibit_rules)
    seq_list = ordered(decisions)
    per_session: dict[str, list[RecordedDecision]] = defaultdict(list)
    for rd in seq_list:
        per_session[rd.value["session_key"]].append(rd)
    repeats: dict[str, list[int]] = {}
    for session, items in per_session.items():
        first: set[str] = set()
        idx = []
        for i, rd in enumerate(items):
            if rd.value["event_id"] in first:
                idx.append(i)
            first.add(rd.value["event_id"])
        repeats[session] = idx
    position: dict[str, int] = defaultdict(int)
    history: dict[str, list[dict[str, Any] | None]] = defaultdict(lambda: [None])
    verdicts: dict[str, Verdict] = {}
    if classify is not None:
        wanted = [events[d.value["event_id"]] for d in seq_list
                  if d.value["event_id"] in events and events[d.value["event_id"]]["kind"] != "timer"]
        unique = list({e["event_id"]: e for e in wanted}.values())
        verdicts = dict(zip((e["event_id"] for e in unique), classify(unique) if unique else []))

    def verdict_for(rec: Mapping[str, Any], event: Mapping[str, Any]) -> Verdict:
        if classify is None:
            return recorded_verdict(rec)
        return verdicts.get(event["event_id"], TIMER_VERDICT)

    def near_restart(session: str, pos: int) -> bool:
        return any(pos <= i <= pos + LOOKAHEAD for i in repeats[session])

    def reproduces(state: dict[str, Any] | None, session: str, pos: int, ctx: Context) -> bool:
        items = per_session[session]
        for rd in items[pos + 1: pos + 1 + LOOKAHEAD]:
            event = events.get(rd.value["event_id"])
            if event is None:
                return True
            r = decide(state, event, replace(ctx, verdict=verdict_for(rd.value, event)))
            if differing_fields(rd.value, r.record):
                return False
            state = r.state
        return True

    for seq, rd in enumerate(seq_list):
        rec = rd.value
        eid, session = rec["event_id"], rec["session_key"]
        pos = position[session]
        position[session] += 1
        event = events.get(eid)
        if event is None:
            report.decisions_without_event.append(rec["decision_id"])
            continue
        hist = history[session]
        ctx = replace(tables.context(base, rd.timestamp), verdict=verdict_for(rec, event))
        result = decide(hist[-1], event, ctx)
        if rewind_plan is not None:
            if (session, pos) in rewind_plan:
                result = decide(hist[rewind_plan[(session, pos)]], event, ctx)
                report.rewinds += 1
        elif differing_fields(rec, result.record) and near_restart(session, pos):
            for index in range(len(hist) - 2, -1, -1):
                r = decide(hist[index], event, ctx)
                if not differing_fields(rec, r.record) and reproduces(r.state, session, pos, ctx):
                    result = r
                    report.rewinds += 1
                    report.rewind_plan[(session, pos)] = index
                    break
        hist.append(result.state)
        report.folded += 1
        report.global_changes += tables.after(rd.timestamp, seq, event, result.record, result.state)
        if not (in_window(eid) and compare_sessions(session)):
            continue
        report.compared += 1
        report.by_kind[rec["kind"]] += 1
        report.runbook_versions[rec.get("runbook_set_version", "")] += 1
        if keep_results:
            report.results[rec["decision_id"]] = (result.record, result.effects)
        fields = differing_fields(rec, result.record)
        if fields:
            report.differences.append(Difference(eid, session, fields, rec, result.record))
            report.by_field.update(fields)
        else:
            report.identical += 1
    return report


# -- what-if ------------------------------------------------------------------------------


def notifications(results: Mapping[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> Counter:
    """Notify effects as comparable keys: (receiver, channel, session, event id, action, title)."""
    out: Counter = Counter()
    for record, effects in results.values():
        for e in effects:
            if e["type"] == "notify":
                n = e["notify"]
                out[(n["receiver"], n["channel"], e["session_key"], e["event_id"], n["action"], n["title"])] += 1
    return out


def stops_by_gate(results: Mapping[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> Counter:
    return Counter(g["gate"] for record, _ in results.values() for g in record.get("gates", []) if g["verdict"] == "stop")


def escalations(results: Mapping[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> int:
    return sum(1 for record, _ in results.values() if record["outcome"] == "escalated")


@dataclass
class WhatIf:
    added: list[tuple] = field(default_factory=list)
    removed: list[tuple] = field(default_factory=list)
    added_by_receiver: Counter = field(default_factory=Counter)
    removed_by_receiver: Counter = field(default_factory=Counter)
    stops_before: Counter = field(default_factory=Counter)
    stops_after: Counter = field(default_factory=Counter)
    escalations_before: int = 0
    escalations_after: int = 0

    def summary(self) -> dict[str, Any]:
        gates = sorted(set(self.stops_before) | set(self.stops_after))
        return {
            "notifications_added": len(self.added), "notifications_removed": len(self.removed),
            "added_by_receiver": dict(self.added_by_receiver), "removed_by_receiver": dict(self.removed_by_receiver),
            "suppressions_by_gate": {g: {"before": self.stops_before[g], "after": self.stops_after[g]} for g in gates},
            "escalations": {"before": self.escalations_before, "after": self.escalations_after},
        }


def what_if(baseline: ReplayReport, changed: ReplayReport) -> WhatIf:
    """What the changed configuration would have done differently on the same traffic."""
    before, after = notifications(baseline.results), notifications(changed.results)
    w = WhatIf(stops_before=stops_by_gate(baseline.results), stops_after=stops_by_gate(changed.results),
               escalations_before=escalations(baseline.results), escalations_after=escalations(changed.results))
    w.added = sorted((after - before).elements())
    w.removed = sorted((before - after).elements())
    w.added_by_receiver = Counter(k[0] for k in w.added)
    w.removed_by_receiver = Counter(k[0] for k in w.removed)
    return w
