"""The indexed inhibition lookup answers exactly what the scan over a flat source list answered.

Three levels: the index itself (order, incremental updates, diffs), the gate on random
labels and rules (indexed vs scanned), and decide end to end: the same random events
folded in batches the way the decide agent folds them, once with the old path (a
tuple of every session's inhibiting alerts rebuilt per batch, scanned by the old flush
gate, kept here verbatim) and once with the new one (an index kept across batches and
re-synced from the changed rows only), must give identical records, effects and states.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from streams.core import gates, grouping
from streams.core.decide import Context, Verdict, decide
from streams.core.gates import Gate
from streams.core.grouping import FlushGate, Pending, _per_alert
from streams.core.inhibition import IndexedSources, InhibitorIndex, as_index
from streams.core.messages import alert_labels
from streams.core.tables import SilenceCache, apply_writes, context_from_tables
from streams.kafka.tracked import TrackedDict, watch_table
from streams.model.matchers import parse_matchers
from streams.model.routing import InhibitRule
from tests.decide.helpers import MIN, T0, alert, starter_set

# An inhibit rule bucketed by (org, service, namespace): the index's mechanics, whatever the starter set holds.
SERVICE_RULES = (
    InhibitRule(
        source=tuple(parse_matchers(['severity="urgent"', 'service!=""'])),
        target=tuple(parse_matchers(['severity=~"warning|action"'])),
        equal=("org", "service", "namespace"),
    ),
)

# -- the old path, verbatim (before the index) -------------------------------------------


def _old_inhibition_gate(f: Any, p: Pending) -> Gate:
    org, session = f.event["org"], f.event["session_key"]
    sources = [lbl for key, lbl in f.ctx.inhibitors if key != session] + [alert_labels(a, org) for _, a in p.firing]
    rules = f.ctx.runbooks.routing.inhibit_rules

    def verdict_of(alert: Mapping[str, Any]) -> Gate:  # _per_alert now hands over the alert, not its labels
        labels = alert_labels(alert, org)
        gate = gates.inhibition_gate(labels, sources, rules)
        if not gate.stopped:
            return gate
        key = next((k for k, lbl in f.ctx.inhibitors if lbl == gate.cause and k != session), None)
        return Gate(gate.gate, gate.verdict, gate.reason, gate.until, None if key is None else (key, gate.cause))

    return _per_alert(f, p, "inhibit", verdict_of, "inhibited", last=True)


def _old_gates() -> tuple[FlushGate, ...]:
    return tuple(
        replace(g, check=_old_inhibition_gate) if g.check is grouping._inhibition_gate else g
        for g in grouping.FLUSH_GATES
    )


# -- random inputs -------------------------------------------------------------------------

SERVICES = ["api", "db", "web", "cache"]
LABEL_VALUES = {
    "service": SERVICES,
    "severity": ["urgent", "warning", "action", "info"],
    "cluster": ["a", "b"],
    "alertname": ["Down", "Slow", "Full"],
    "org": ["acme", "beta"],
}


def random_labels(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(v) for k, v in LABEL_VALUES.items() if rng.random() < 0.85}


def random_rules(rng: random.Random) -> tuple[InhibitRule, ...]:
    pool = [
        (['severity="urgent"'], ['severity=~"warning|action"'], ("org", "service")),
        (['alertname="Down"'], ['alertname!="Down"'], ("cluster",)),
        (['severity=~"urgent|warning"'], ['severity="info"'], ()),
        (['service=~"db|cache"'], ['service!~"db|cache"'], ("org", "cluster", "nolabel")),
    ]
    chosen = rng.sample(pool, rng.randint(1, len(pool)))
    return tuple(InhibitRule(source=parse_matchers(s), target=parse_matchers(t), equal=e) for s, t, e in chosen)


# -- the index -----------------------------------------------------------------------------


def test_the_index_iterates_as_the_tuple_it_was_built_from_and_follows_session_updates():
    rules = SERVICE_RULES
    a = {"org": "acme", "service": "api", "severity": "urgent", "alertname": "Down"}
    b = {"org": "acme", "service": "db", "severity": "urgent", "alertname": "Down"}
    pairs = (("s1", a), ("s2", b), ("s2", a))
    index = InhibitorIndex.from_pairs(pairs, rules)
    assert list(index) == list(pairs) and len(index) == 3
    assert as_index(pairs, rules) is as_index(pairs, rules)  # built once per tuple

    live = InhibitorIndex(rules)
    table = {"s2": [b, a], "s1": [a]}
    live.sync(table)
    assert list(live) == [("s1", a), ("s2", b), ("s2", a)]
    target = {"org": "acme", "service": "api", "severity": "warning"}
    # the bucket: the rule's equal labels (org, service, namespace); a label neither alert has is ""
    assert live.first(0, ("acme", "api", ""), "s9", target) == ("s1", a)
    assert live.first(0, ("acme", "api", ""), "s1", target) == (
        "s2",
        a,
    )  # a session never inhibits itself via the table
    del table["s1"]
    table["s2"] = [b]
    assert live.sync(table, changed={"s1", "s2"}) == 2
    assert list(live) == [("s2", b)] and live.first(0, ("acme", "api", ""), "s9", target) is None
    table["s3"] = [a]
    live.sync(table)  # a full diff finds it too
    assert list(live) == [("s2", b), ("s3", a)]


def test_an_equal_value_read_back_from_the_changelog_is_not_re_indexed():
    rules = SERVICE_RULES
    a = {"org": "acme", "service": "api", "severity": "urgent", "alertname": "Down"}
    b = {"org": "acme", "service": "db", "severity": "urgent", "alertname": "Down"}
    target = {"org": "acme", "service": "api", "severity": "warning"}
    table = {"s1": [a, b]}
    live = InhibitorIndex(rules)
    live.sync(table)
    entries = live._entries["s1"]
    table["s1"] = [dict(a), dict(b)]  # the worker's own write, decoded from the changelog: equal, not the same
    assert live.sync(table, changed={"s1"}) == 1
    assert live._entries["s1"] is entries  # kept, not rebuilt
    assert live.sync(table) == 0  # and the identity diff now sees the new object as indexed
    assert live.first(0, ("acme", "api", ""), "s9", target) == ("s1", a) and len(live) == 2
    table["s1"] = [b]  # a real change is re-indexed
    live.sync(table, changed={"s1"})
    assert live._entries["s1"] is not entries and list(live) == [("s1", b)]
    assert live.first(0, ("acme", "api", ""), "s9", target) is None


def test_a_tracked_table_reports_each_changed_key_once_per_drain():
    store = type("Store", (), {})()
    store.data = {"x": 1}
    table = type("Table", (), {})()
    table.data = store
    changes = watch_table(table)
    assert isinstance(store.data, TrackedDict) and changes is not None
    assert changes.drain() == {"x"}  # what was there counts as changed once
    rows = store.data
    rows["a"] = 1
    rows.update([("b", 2), ("c", 3)])
    rows.pop("x", None)
    del rows["a"]
    assert changes.drain() == {"a", "b", "c", "x"} and changes.drain() == set()
    rows.clear()
    assert changes.drain() == {"b", "c"}
    assert watch_table({"plain": "dict"}) is None


@pytest.mark.parametrize("seed", range(40))
def test_the_indexed_gate_gives_the_scanned_gate_on_random_labels_and_rules(seed):
    rng = random.Random(seed)
    rules = random_rules(rng)
    pairs = tuple((f"s{rng.randint(0, 6)}", random_labels(rng)) for _ in range(rng.randint(0, 30)))
    pairs = tuple(sorted(pairs, key=lambda kv: kv[0]))
    index = InhibitorIndex.from_pairs(pairs, rules)
    for _ in range(60):
        session = f"s{rng.randint(0, 7)}"
        own = [random_labels(rng) for _ in range(rng.randint(0, 3))]
        labels = rng.choice(own) if own and rng.random() < 0.3 else random_labels(rng)
        scanned = gates.inhibition_gate(labels, [lbl for k, lbl in pairs if k != session] + own, rules)
        indexed = gates.inhibition_gate(labels, IndexedSources(index, session, own), rules)
        assert indexed == scanned and indexed.cause == scanned.cause


# -- decide, old path against new ---------------------------------------------------------

URGENT = Verdict(category="availability", severity="urgent", classifier="test-1")
WARNING = Verdict(category="availability", severity="warning", classifier="test-1")
ACTION = Verdict(category="cpu", severity="action", classifier="test-1")


def random_events(rng: random.Random, n: int) -> list[tuple[dict[str, Any], Verdict]]:
    out = []
    at = T0
    for i in range(n):
        at += rng.choice([1_000, 20_000, MIN, 3 * MIN])
        service = rng.choice(SERVICES)
        session = f"acme:{service}:{rng.randint(0, 3)}"
        name = rng.choice(["PrometheusTargetMissing", "HostHighCpuLoad", "PostgresqlDown"])
        status = "resolved" if rng.random() < 0.2 else "firing"
        ev = alert(
            name,
            status=status,
            at=at,
            instance=f"{service}-{rng.randint(0, 2)}:9100",
            service=service,
            session=session,
            eid=f"e{i}",
            labels={"cluster": rng.choice("ab")},
        )
        out.append((ev, rng.choice([URGENT, WARNING, WARNING, ACTION])))
    return out


def fold_like_the_agent(events, base: Context, *, indexed: bool) -> list[Any]:
    states: dict[str, Any] = {}
    timers: dict[str, Any] = {}
    silences: dict[str, Any] = {}
    inhibitors: Any = TrackedDict() if indexed else {}
    changes = None
    if indexed:
        holder = type("Table", (), {})()
        holder.data = type("Store", (), {})()
        holder.data.data = inhibitors
        changes = watch_table(holder)
        inhibitors = holder.data.data
    index = InhibitorIndex(base.runbooks.routing.inhibit_rules) if indexed else None
    cache = SilenceCache()
    out: list[Any] = []
    i = 0
    rng = random.Random(len(events))
    while i < len(events):
        batch = events[i : i + rng.randint(1, 6)]
        i += len(batch)
        ctx = context_from_tables(
            base,
            silences=silences,
            inhibitors=inhibitors,
            cache=cache,
            index=index,
            changed=changes.drain() if changes is not None else None,
        )
        last = {}
        for event, verdict in batch:
            session = event["session_key"]
            prior = last[session].state if session in last else states.get(session)
            result = decide(prior, event, replace(ctx, verdict=verdict))
            last[session] = result
            out.append((result.all_records, result.all_effects))
        for session, result in last.items():
            states[session] = result.state
            apply_writes(result.writes, partition=0, timers=timers, inhibitors=inhibitors, silences=silences)
    out.append(states)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_decide_with_the_index_folds_what_the_old_scan_folded(seed, monkeypatch):
    rng = random.Random(1000 + seed)
    rset = starter_set()
    extra = (
        InhibitRule(
            source=parse_matchers(['alertname="PrometheusTargetMissing"']),
            target=parse_matchers(['alertname!="PrometheusTargetMissing"']),
            equal=("cluster",),
        ),
    )
    if seed % 2:
        rset = replace(rset, routing=replace(rset.routing, inhibit_rules=rset.routing.inhibit_rules + extra))
    base = Context(runbooks=rset)
    events = random_events(rng, 120)
    new = fold_like_the_agent(events, base, indexed=True)
    with monkeypatch.context() as m:
        m.setattr(grouping, "FLUSH_GATES", _old_gates())
        old = fold_like_the_agent(events, base, indexed=False)
    assert new == old
    inhibited = sum(
        1
        for records, _ in new[:-1]
        for r in records
        if any(g["gate"] == "inhibit" and g["verdict"] == "stop" for g in r["gates"])
    )
    assert inhibited, "the random storm should inhibit something, or the comparison proves little"
