"""Must show (decide's side of the digest): the digest counts a day's decisions from the decide
agent's own batches, once each, through crashes, failed produces and re-reads; never by reading
``decisions`` back.

The real decide agent body and codec, dict tables, a produce batcher whose flush can fail (then
nothing of it landed), and the digest's real fold over what landed on ``digest.counts``. The
reference is a run without faults; the faulted run must hold exactly its counts, though its
``decisions`` topic holds the decisions of the events decided twice (which the digest counted
twice before issue 17, when it counted ``decisions`` records).
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.decide import DecideAgent
from agents.digest import COUNTS_TOPIC, DecisionDeltas
from streams.core.digest import SOURCE_TOPICS, DigestCounts, add_decision, day_of, fold_delta
from tests.agent_bodies.test_agents_unit import CODEC, RSET, FakeStream, decide_agent, dict_tables, message
from tests.decide.helpers import MIN, T0, alert

TZ = "UTC"


@dataclass
class Produce:
    """A produce batcher: :meth:`flush` lands what was added since the last flush, or (``fail``) none of it."""

    pending: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    landed: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    fail: int = 0
    flushes: int = 0

    def add(self, topic: str, key: bytes, value: bytes) -> None:
        self.pending.append((topic, key, value))

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.flushes += 1
        if self.fail:
            self.fail -= 1
            raise RuntimeError("injected: the broker did not acknowledge the produce")
        self.landed += pending

    def decoded(self, topic: str) -> list[dict[str, Any]]:
        return [CODEC.decode(v) for t, _, v in self.landed if t == topic]


def agent(tables: Any) -> DecideAgent:
    digest = DecisionDeltas(enabled=RSET.digest.enabled, codec=CODEC, prefix="", topic=COUNTS_TOPIC)
    return decide_agent(tables, [], digest=digest)


def traffic() -> list[Any]:
    """Twelve events of two orgs on events.telemetry[3] at offsets 0..11; the last of a session comes
    hours after its first, so its escalation timers fire before it (several records, one position)."""
    sessions = [f"acme:alert:TargetDown:s{i}" for i in range(4)] + ["globex:alert:TargetDown:g"]
    events = [
        alert(at=T0 + i * MIN, session=sessions[i % 5], instance=f"h{i}:9100", eid=f"e{i}", org=sessions[i % 5][:5])
        for i in range(11)
    ]
    events.append(alert(at=T0 + 180 * MIN, session=sessions[0], instance="h0:9100", eid="e11"))
    for e in events:
        e["org"] = e["session_key"].split(":")[0]
    return [message(e, partition=3, offset=i) for i, e in enumerate(events)]


def digest(landed: list[dict[str, Any]]) -> dict[str, Any]:
    """The digests table after folding ``landed`` digest.counts records in order."""
    table: dict[str, Any] = {}
    for record in landed:
        table[record["org"]] = fold_delta(table.get(record["org"]), record, tz=TZ, partition=0, now_ms=None)
    return {org: {day: DigestCounts.from_dict(c) for day, c in v["days"].items()} for org, v in table.items()}


def tally(decisions: list[dict[str, Any]]) -> dict[str, dict[str, DigestCounts]]:
    """What counting ``decisions`` records (the mechanism before issue 17) gives."""
    out: dict[str, dict[str, DigestCounts]] = {}
    for d in decisions:
        add_decision(out.setdefault(d["org"], {}).setdefault(day_of(d["decided_at"], TZ), DigestCounts()), d)
    return out


def handle(decide: DecideAgent, events: list[Any], out: Produce) -> None:
    asyncio.run(decide.handle(FakeStream(), events, out))


def test_a_clean_run_counts_every_decision_record_once_from_decides_own_batches():
    tables, out = dict_tables(), Produce()
    decide = agent(tables)
    events = traffic()
    for i in range(0, len(events), 4):
        handle(decide, events[i : i + 4], out)
    decisions = out.decoded("decisions")
    assert len(decisions) > len(events)  # the last event's timers fired first: more records than events
    got = digest(out.decoded(COUNTS_TOPIC))
    assert got == tally(decisions) and got["acme"]["2023-11-14"].events > 0 and "globex" in got
    items = [i for r in out.decoded(COUNTS_TOPIC) for i in r["items"]]
    assert {(i["topic"], i["partition"]) for i in items} == {("events.telemetry", 3)}
    assert len([i for i in items if i["offset"] == 11]) > 1  # the fired timers share their event's position
    assert out.flushes == 3 and "decisions" not in SOURCE_TOPICS  # one produce per batch; nothing read back


def test_counts_stay_exact_across_a_crash_a_failed_produce_and_re_reads():
    events = traffic()
    clean_tables, clean = dict_tables(), Produce()
    reference = agent(clean_tables)
    for part in (events[0:4], events[4:8], events[8:10], events[10:12]):
        handle(reference, part, clean)
    want = digest(clean.decoded(COUNTS_TOPIC))

    tables, out = dict_tables(), Produce()
    decide = agent(tables)
    handle(decide, events[0:4], out)
    # Killed between the produce (decisions and counts acknowledged) and the state write: the next
    # owner starts from the tables as they were and decides the batch again.
    before = copy.deepcopy(tables)
    handle(decide, events[4:8], out)
    tables = before
    decide = agent(tables)
    handle(decide, events[4:8], out)
    # A batch whose produce fails: nothing landed; the batch loop handles it again at once (its
    # items still carried). That second try writes the batch's state, so a later re-read (from an
    # older commit, after a rebalance) decides its events as duplicates; the digest counts each
    # event once either way.
    out.fail = 1
    with pytest.raises(RuntimeError, match="injected"):
        handle(decide, events[8:10], out)
    handle(decide, events[8:10], out)  # handled again at once
    handle(decide, events[10:12], out)
    handle(decide, events[8:10], out)  # and once more, from an older commit

    assert digest(out.decoded(COUNTS_TOPIC)) == want
    assert digest(out.decoded(COUNTS_TOPIC)) == tally(clean.decoded("decisions"))
    # the decisions topic holds the re-decided events twice; counting its records over-counts
    twice = tally(out.decoded("decisions"))["acme"]["2023-11-14"]
    assert twice.events > want["acme"]["2023-11-14"].events
    assert Counter(d["event_id"] for d in out.decoded("decisions"))["e4"] == 2


def test_an_orgs_counts_past_one_record_go_out_in_parts_each_after_the_previous_landed():
    tables, out = dict_tables(), Produce()
    decide = agent(tables)
    assert decide.digest is not None
    decide.digest.budget = 300  # a part holds about one event's items
    events = traffic()
    handle(decide, events, out)
    records = out.decoded(COUNTS_TOPIC)
    assert len(records) > 4 and out.flushes == max(Counter(r["org"] for r in records).values())
    positions = [{i["offset"] for i in r["items"]} for r in records]
    assert all(not (a & b) for n, a in enumerate(positions) for b in positions[n + 1 :])  # an event in one part
    assert digest(records) == tally(out.decoded("decisions"))
