"""The pure half of replay: re-fold recorded traffic and compare with what was recorded.

No Kafka here. :mod:`streams.replay.run` reads the topics and hands this module the
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
  events get the agent's fixed timer verdict. Silences and inhibiting alerts: an
  exact replay hands decide the ones its records say stopped something; a what-if
  rebuilds the agent's global tables from the folded decisions in record-timestamp
  order (a change made by a decision is seen by decisions recorded strictly later),
  which is exact while those tables do not change between two decisions of one batch.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from streams.core.decide import Context, Decision, Verdict, decide
from streams.core.state import SessionState
from streams.core.tables import SilenceCache, Writes, apply_writes, context_from_tables

TIMER_VERDICT = Verdict(category="other", severity="info", classifier="none")  # as agents/decide.py

Classify = Callable[[Sequence[Mapping[str, Any]]], list[Verdict]]
RecordedInputs = Callable[[Iterable[Mapping[str, Any]], Context], Context]
# A notify effect as a comparable key: (receiver, channel, session, event id, action, title).
NotificationKey = tuple[str, str, str, str, str, str]


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
    by_field: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    events_without_decision: list[str] = field(default_factory=list)
    decisions_without_event: list[str] = field(default_factory=list)
    runbook_versions: Counter[str] = field(default_factory=Counter)  # recorded versions of the compared decisions
    runbook_version_used: str = ""
    decide_versions: Counter[str] = field(default_factory=Counter)  # recorded decide versions of the compared decisions
    replayed_without_record: list[str] = field(default_factory=list)  # inline timer folds no decision recorded
    rewinds: int = 0  # decisions folded again from an earlier state (a worker re-processed them)
    global_changes: int = 0  # silence / inhibitor changes rebuilt from the replay
    folded: int = 0
    rewind_plan: dict[str, dict[int, int]] = field(default_factory=dict)  # session -> {position: restored index}
    # decision_id -> (replayed record, replayed effects), for what-if comparisons
    results: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=dict)

    @property
    def identical_pct(self) -> float:
        return 100.0 * self.identical / self.compared if self.compared else 100.0

    def summary(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "identical": self.identical,
            "identical_pct": round(self.identical_pct, 3),
            "differing": len(self.differences),
            "by_field": dict(self.by_field),
            "by_kind": dict(self.by_kind),
            "events_without_decision": len(self.events_without_decision),
            "decisions_without_event": len(self.decisions_without_event),
            "replayed_without_record": len(self.replayed_without_record),
            "runbook_versions_recorded": dict(self.runbook_versions),
            "runbook_version_used": self.runbook_version_used,
            "decide_versions_recorded": dict(self.decide_versions),
            "rewinds": self.rewinds,
            "global_changes": self.global_changes,
            "folded": self.folded,
        }


def differing_fields(recorded: Mapping[str, Any], replayed: Mapping[str, Any]) -> list[str]:
    """Names of the fields that differ; maps are compared per key (``matched.receivers``)."""
    out = []
    for key in sorted(set(recorded) | set(replayed)):
        a, b = recorded.get(key), replayed.get(key)
        if key == "timer_effects" and not a:
            # A record written before timer effects moved onto it holds none (the schema's default).
            # Their ids are in effect_ids either way, so a missing or extra timer effect still shows there.
            continue
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
    return Verdict(
        category=record["category"],
        severity=record["severity"],
        confidence=float(record["confidence"]),
        classifier=record["classifier"],
        fallback=bool(record["fallback"]),
        severity_confidence=float(matched.get("severity_confidence", "1")),
        severity_inferred=matched.get("severity_inferred") == "true",
        category_inferred=matched.get("category_inferred") == "true",
        severity_basis=matched.get("severity_basis", ""),
    )


def ordered(decisions: Iterable[RecordedDecision]) -> list[RecordedDecision]:
    """All decisions in one order: each partition in offset order, partitions merged by timestamp."""
    parts: dict[int, list[RecordedDecision]] = defaultdict(list)
    for d in decisions:
        parts[d.partition].append(d)
    lists = [sorted(p, key=lambda d: d.offset) for p in parts.values()]
    return list(heapq.merge(*lists, key=lambda d: (d.timestamp, d.partition, d.offset)))


class GlobalTables:
    """Silences and inhibiting alerts as the agent's global tables hold them, rebuilt in order.

    Each folded decision's writes are applied exactly as the decide agent applies them
    (:func:`streams.core.tables.apply_writes`), queued at the decision's timestamp.
    """

    def __init__(self) -> None:
        self.silences: dict[str, str] = {}
        self.inhibitors: dict[str, list[dict[str, str]]] = {}
        self.timers: dict[str, Any] = {}  # the agent's timers index; replay has no ticker to read it
        self.cache = SilenceCache()
        self.pending: list[tuple[int, int, Writes]] = []

    def context(self, base: Context, timestamp: int) -> Context:
        """The context a decision recorded at ``timestamp`` saw: changes recorded strictly before it."""
        while self.pending and self.pending[0][0] < timestamp:
            _, _, writes = heapq.heappop(self.pending)
            apply_writes(writes, partition=0, timers=self.timers, inhibitors=self.inhibitors, silences=self.silences)
        return context_from_tables(base, silences=self.silences, inhibitors=self.inhibitors, cache=self.cache)

    def after(self, timestamp: int, seq: int, decision: Decision) -> int:
        """Queue the table changes a decision makes; returns how many."""
        writes = decision.writes
        session = writes.session
        changes = len(writes.silences) + (1 if writes.inhibitors or session in self.inhibitors else 0)
        if changes:
            heapq.heappush(self.pending, (timestamp, seq, writes))
        return changes


BACK = 10  # decisions before a restart's first repeat that the new worker may have decided
TAIL = 30  # decisions after a restart's last repeat a reconstructed state must also reproduce
WIDER = 40  # how far back a restored state is searched when the inferred one does not reproduce


def _restart_blocks(items: Sequence[RecordedDecision]) -> list[tuple[int, int]]:
    """(first, last) positions of each run of repeated decisions (events decided again)."""
    seen: set[str] = set()
    repeats = []
    for i, rd in enumerate(items):
        if rd.value["event_id"] in seen:
            repeats.append(i)
        seen.add(rd.value["event_id"])
    blocks: list[tuple[int, int]] = []
    for i in repeats:
        if blocks and i - blocks[-1][1] <= BACK:
            blocks[-1] = (blocks[-1][0], i)
        else:
            blocks.append((i, i))
    return blocks


def _restored_index(items: Sequence[RecordedDecision], block: tuple[int, int]) -> int:
    """The position whose prior state the restarted worker re-read, from what it repeated.

    It had seen every event it now calls a duplicate and not the first one it decides
    again: the state just after the last of the former (or just before the latter)."""
    first_at: dict[str, int] = {}
    for i, rd in enumerate(items[: block[0]]):
        first_at.setdefault(rd.value["event_id"], i)
    dups = [
        first_at[rd.value["event_id"]]
        for rd in items[block[0] : block[1] + 1]
        if rd.value["outcome"] == "duplicate" and rd.value["event_id"] in first_at
    ]
    again = [
        first_at[rd.value["event_id"]]
        for rd in items[block[0] : block[1] + 1]
        if rd.value["outcome"] != "duplicate" and rd.value["event_id"] in first_at
    ]
    if dups:
        return max(dups) + 1
    return min(again) if again else block[0]


def _recorded_inputs() -> RecordedInputs | None:
    """decide's ``recorded_inputs`` where this version of decide records them."""
    try:
        from streams.core.decide import recorded_inputs
    except ImportError:
        return None
    return recorded_inputs


def _state_of(decision: Decision) -> SessionState:
    """The state a decision left."""
    return decision.state


def plan_restarts(
    items: Sequence[RecordedDecision],
    events: Mapping[str, dict[str, Any]],
    base: Context,
    verdict_for: Callable[[Mapping[str, Any], Mapping[str, Any]], Verdict],
) -> dict[int, int]:
    """Where a session's recorded decisions show a restart, which earlier state the new
    worker folded from: {position p: index k} means decision p was folded from the state
    before decision k. Each guess is kept only if it reproduces every decision from p to
    a few past the restart's last repeat; otherwise none is made (the differences then
    show in the report)."""
    blocks = _restart_blocks(items)
    if not blocks:
        return {}
    plan: dict[int, int] = {}
    hist: list[SessionState | None] = [None]
    inputs = _recorded_inputs()

    def fold(state: SessionState | None, rd: RecordedDecision) -> tuple[SessionState | None, bool]:
        event = events.get(rd.value["event_id"])
        if event is None:
            return state, True
        outer = inputs([rd.value], base) if inputs is not None else base
        r = decide(state, event, replace(outer, verdict=verdict_for(rd.value, event)))
        return _state_of(r), not differing_fields(rd.value, r.record)

    pos = 0
    for first, last in blocks:
        mismatch = None  # the new worker began at or before the first decision the running state misses
        while pos < first:
            state, ok = fold(hist[-1], items[pos])
            if not ok and mismatch is None and pos >= first - BACK:
                mismatch = pos
            hist.append(state)
            pos += 1
        k0 = _restored_index(items, (first, last))
        found = None
        # earliest first: a state the new worker folded new events into before its repeats
        # (an ack that moved the session clock) must be found, not skipped
        for p in range(max(first - BACK, 0), (first if mismatch is None else mismatch) + 1):
            # the inferred state first, then its neighbours, then every earlier state back to
            # the restart window: which batch's state write the killed worker lost is not recorded
            nearby = (k0, k0 - 1, k0 + 1, k0 - 2, k0 + 2)
            for k in (*nearby, *(j for j in range(p, max(p - WIDER, 0) - 1, -1) if j not in nearby)):
                if not 0 <= k <= p:
                    continue
                state, ok = hist[k], True
                for rd in items[p : min(last + TAIL + 1, len(items))]:
                    state, ok = fold(state, rd)
                    if not ok:
                        break
                if ok:
                    found = (p, k)
                    break
            if found:
                break
        if found is None:
            continue
        p, k = found
        plan[p] = k
        del hist[p + 1 :]
        state = hist[k]
        for rd in items[p:first]:
            state, _ = fold(state, rd)
            hist.append(state)
        pos = first
    return plan


def replay(
    events: Mapping[str, dict[str, Any]],
    decisions: Sequence[RecordedDecision],
    base: Context,
    in_window: Callable[[str], bool],
    *,
    classify: Classify | None = None,
    compare_sessions: Callable[[str], bool] = lambda _: True,
    keep_results: bool = False,
    rewind_plan: Mapping[str, Mapping[int, int]] | None = None,
    use_recorded_inputs: bool = True,
) -> ReplayReport:
    """Fold every recorded decision's event again and compare the decisions in the window.

    ``events``: event id -> decoded event; ``in_window(event_id)``: whether that decision
    is compared; ``classify``: re-classify with another model (what-if), else the
    recorded verdicts are used.

    Restarts: a worker that died re-reads a session's state from its changelog, which
    may be older than the last decision it recorded, and then re-processes events
    (their decisions repeat, as ``duplicate`` or decided again). Which state it re-read
    is not recorded: :func:`plan_restarts` infers it from which repeats were duplicates
    and keeps the guess only if it reproduces the decisions around the restart
    (``rewinds`` counts them). A what-if passes the baseline's ``rewind_plan`` so its
    fold restarts from the same states.

    Outside inputs: decide records the silences and other sessions' alerts that stopped
    something; with ``use_recorded_inputs`` (exact replay) each call gets those back
    (``streams.core.decide.recorded_inputs``). A what-if, whose changed configuration may be
    stopped by inputs that stopped nothing before, uses the global tables rebuilt from
    the replay instead.
    """
    report = ReplayReport(runbook_version_used=base.runbooks.version)
    tables = GlobalTables()
    seq_list = ordered(decisions)
    per_session: dict[str, list[RecordedDecision]] = defaultdict(list)
    for rd in seq_list:
        per_session[rd.value["session_key"]].append(rd)
    verdicts: dict[str, Verdict] = {}
    if classify is not None:
        wanted = [
            events[d.value["event_id"]]
            for d in seq_list
            if d.value["event_id"] in events and events[d.value["event_id"]]["kind"] != "timer"
        ]
        unique = list({e["event_id"]: e for e in wanted}.values())
        verdicts = dict(zip((e["event_id"] for e in unique), classify(unique) if unique else []))

    def verdict_for(rec: Mapping[str, Any], event: Mapping[str, Any]) -> Verdict:
        if classify is None:
            return recorded_verdict(rec)
        return verdicts.get(event["event_id"], TIMER_VERDICT)

    if rewind_plan is None:
        plans = {session: plan_restarts(items, events, base, verdict_for) for session, items in per_session.items()}
        report.rewind_plan = {s: p for s, p in plans.items() if p}
    else:
        plans = {s: dict(p) for s, p in rewind_plan.items()}
        report.rewind_plan = dict(plans)
    position: dict[str, int] = defaultdict(int)
    history: dict[str, list[SessionState | None]] = defaultdict(lambda: [None])
    recorded = _recorded_inputs() if use_recorded_inputs else None

    pending: dict[str, list[RecordedDecision]] = defaultdict(list)  # decisions of timers decide fires inline

    def compare(
        rec: dict[str, Any], replayed: dict[str, Any], effects: list[dict[str, Any]], session: str, window_id: str
    ) -> None:
        if not (in_window(window_id) and compare_sessions(session)):
            return
        report.compared += 1
        report.by_kind[rec["kind"]] += 1
        report.runbook_versions[rec.get("runbook_set_version", "")] += 1
        report.decide_versions[rec.get("decide_version", "")] += 1
        if keep_results:
            report.results[rec["decision_id"]] = (replayed, effects)
        fields = differing_fields(rec, replayed)
        if fields:
            report.differences.append(Difference(rec["event_id"], session, fields, rec, replayed))
            report.by_field.update(fields)
        else:
            report.identical += 1

    for seq, rd in enumerate(seq_list):
        rec = rd.value
        eid, session = rec["event_id"], rec["session_key"]
        pos = position[session]
        position[session] += 1
        hist = history[session]
        event = events.get(eid)
        if event is None:
            # A timer decide folded before a later event (its record comes first), or an
            # event out of retention: matched against the next fold's fired timers.
            pending[session].append(rd)
            plan = plans.get(session)
            if plan and pos in plan:  # the restarted worker's first record: from the restored state on
                hist.append(hist[plan[pos]])
                report.rewinds += 1
            else:
                hist.append(hist[-1])
            continue
        plan = plans.get(session)
        prior = hist[-1]
        if plan and pos in plan:
            prior = hist[plan[pos]]
            report.rewinds += 1
        if recorded is not None:
            outer = recorded([w.value for w in pending[session]] + [rec], base)
        else:
            outer = tables.context(base, rd.timestamp)
        ctx = replace(outer, verdict=verdict_for(rec, event))
        result = decide(prior, event, ctx)
        hist.append(_state_of(result))
        report.folded += 1
        report.global_changes += tables.after(rd.timestamp, seq, result)
        for fired in getattr(result, "fired", ()):
            waiting = pending[session]
            match = next((i for i, w in enumerate(waiting) if w.value["event_id"] == fired.event["event_id"]), None)
            if match is None:
                report.replayed_without_record.append(fired.event["event_id"])
                continue
            report.folded += 1
            compare(waiting.pop(match).value, fired.record, fired.effects, session, eid)
        compare(rec, result.record, result.effects, session, eid)
    for session, waiting in pending.items():
        report.decisions_without_event += [w.value["decision_id"] for w in waiting if compare_sessions(session)]
    return report


# -- what-if ------------------------------------------------------------------------------


def notifications(results: Mapping[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> Counter[NotificationKey]:
    """Notify effects as comparable keys: (receiver, channel, session, event id, action, title)."""
    out: Counter[NotificationKey] = Counter()
    for _record, effects in results.values():
        for e in effects:
            if e["type"] == "notify":
                n = e["notify"]
                out[(n["receiver"], n["channel"], e["session_key"], e["event_id"], n["action"], n["title"])] += 1
    return out


def stops_by_gate(results: Mapping[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> Counter[str]:
    return Counter(
        g["gate"] for record, _ in results.values() for g in record.get("gates", []) if g["verdict"] == "stop"
    )


def escalations(results: Mapping[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> int:
    return sum(1 for record, _ in results.values() if record["outcome"] == "escalated")


@dataclass
class WhatIf:
    added: list[NotificationKey] = field(default_factory=list)
    removed: list[NotificationKey] = field(default_factory=list)
    added_by_receiver: Counter[str] = field(default_factory=Counter)
    removed_by_receiver: Counter[str] = field(default_factory=Counter)
    stops_before: Counter[str] = field(default_factory=Counter)
    stops_after: Counter[str] = field(default_factory=Counter)
    escalations_before: int = 0
    escalations_after: int = 0

    def summary(self) -> dict[str, Any]:
        gates = sorted(set(self.stops_before) | set(self.stops_after))
        return {
            "notifications_added": len(self.added),
            "notifications_removed": len(self.removed),
            "added_by_receiver": dict(self.added_by_receiver),
            "removed_by_receiver": dict(self.removed_by_receiver),
            "suppressions_by_gate": {g: {"before": self.stops_before[g], "after": self.stops_after[g]} for g in gates},
            "escalations": {"before": self.escalations_before, "after": self.escalations_after},
        }


def what_if(baseline: ReplayReport, changed: ReplayReport) -> WhatIf:
    """What the changed configuration would have done differently on the same traffic."""
    before, after = notifications(baseline.results), notifications(changed.results)
    w = WhatIf(
        stops_before=stops_by_gate(baseline.results),
        stops_after=stops_by_gate(changed.results),
        escalations_before=escalations(baseline.results),
        escalations_after=escalations(changed.results),
    )
    w.added = sorted((after - before).elements())
    w.removed = sorted((before - after).elements())
    w.added_by_receiver = Counter(k[0] for k in w.added)
    w.removed_by_receiver = Counter(k[0] for k in w.removed)
    return w
