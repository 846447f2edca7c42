"""The decide agent folds a session's events of one batch into one copy of its state (issue 17).

``decide(..., owned=True)`` folds into the state it is handed instead of copying it; the
agent does so for a session's second and later events of a batch. Differential test:
random multi-session storms (alerts firing and resolving, acks, resolves, re-sent
duplicates, timers folded inline) go through the agent's body in random batch sizes
twice, once as it runs and once with every fold copying its state (the code before);
records, effects, dead letters and every table must be identical. Some events are
made to fail after their fold changed the state in place, which the agent must undo.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import agents.decide as agent_module
from streams.core.decide import Context
from streams.core.decide import decide as real_decide
from streams.core.state import (
    SEEN_TOKEN_CHARS,
    STATE_MARK,
    DecodedStates,
    decode_state,
    encode_state,
    has_seen,
    remember,
    seen_token,
)
from tests.agent_bodies.test_agents_unit import CODEC, FakeOut, FakeStream, decide_agent, dict_tables, message
from tests.decide.helpers import MIN, T0, alert, webhook

SERVICES = ("api", "db", "web", "cache")


def random_storm(rng: random.Random, n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    at = T0
    for i in range(n):
        at += rng.choice([1_000, 20_000, MIN, 3 * MIN, 10 * MIN])
        service = rng.choice(SERVICES)
        session = f"acme:{service}:{rng.randint(0, 2)}"
        roll = rng.random()
        if roll < 0.08 and events:
            events.append(dict(rng.choice(events)))  # a producer retry: the same event again
            continue
        if roll < 0.15:
            events.append(webhook(rng.choice(["ack", "incident.resolved"]), at=at, session=session, eid=f"w{i}"))
            continue
        events.append(
            alert(
                rng.choice(["PrometheusTargetMissing", "HostHighCpuLoad", "PostgresqlDown"]),
                status="resolved" if rng.random() < 0.2 else "firing",
                at=at,
                instance=f"{service}-{rng.randint(0, 2)}:9100",
                service=service,
                session=session,
                eid=f"e{i}",
            )
        )
    return events


def run_agent(events: list[dict[str, Any]], sizes: list[int], *, copying: bool, poison: set[str]) -> Any:
    """The agent's body over ``events`` in batches of ``sizes``; what it sent and kept.

    ``copying``: the code before issue 17's folds in place, every fold copying its state and
    every batch decoding the table's (no states kept decoded between batches)."""
    tables, dead, out, stream = dict_tables(), [], FakeOut(), FakeStream()
    agent = decide_agent(tables, dead)
    if copying:
        agent.decoded.limit = 0

    def fold(state: Any, event: Any, ctx: Any, *, owned: bool = False) -> Any:
        result = real_decide(state, event, ctx, owned=owned and not copying)
        if event["event_id"] in poison:
            raise RuntimeError("a fold that failed after changing the state")
        return result

    original = agent_module.decide
    agent_module.decide = fold
    try:
        msgs = [message(e, partition=0, offset=i) for i, e in enumerate(events)]
        i = 0
        for size in sizes:
            if i >= len(msgs):
                break
            asyncio.run(agent.handle(stream, msgs[i : i + size], out))
            i += size
    finally:
        agent_module.decide = original
    return (
        [(t, k, v) for t, k, v in out.records],
        [d["value"] for d in dead],
        {key: decode_state(value)[0] for key, value in tables.sessions.items()},
        dict(tables.timers),
        dict(tables.inhibitors),
    )


@pytest.mark.parametrize("seed", range(12))
def test_folding_in_place_within_a_batch_gives_what_copying_gave(seed):
    rng = random.Random(seed)
    events = random_storm(rng, 150)
    sizes = [rng.randint(1, 40) for _ in range(len(events))]
    poison = {e["event_id"] for e in rng.sample(events, 4)} if seed % 3 == 0 else set()
    new = run_agent(events, sizes, copying=False, poison=poison)
    old = run_agent(events, sizes, copying=True, poison=poison)
    assert new == old
    records, _, sessions, _, _ = new
    assert len(records) > len(events) and sessions  # the storm decided, notified and kept state
    if poison:
        assert len(new[1]) >= 1  # the failed folds were dead-lettered


def test_a_decoded_state_is_reused_only_while_the_table_holds_the_bytes_written_and_only_once():
    states = DecodedStates(limit=2)
    state = real_decide(None, alert(at=T0, eid="a1"), Context()).state
    raw = encode_state(state)
    states.keep("s1", raw, state)
    assert states.take("s1", encode_state(state)) == (state, True)  # equal bytes, another object: decoded
    states.keep("s1", raw, state)
    taken, owned = states.take("s1", raw)
    assert taken is state and owned  # the very bytes written: no decode
    again, _ = states.take("s1", raw)
    assert again is not state and again == state  # taken once: the fold owns it (and may have changed it)
    for session in ("s1", "s2", "s3"):  # the least recently written goes beyond the limit
        states.keep(session, raw, state)
    assert states.take("s1", raw)[0] is not state and states.take("s3", raw)[0] is state
    assert states.take("s9", None) == (None, False)


def test_an_owned_state_is_folded_in_place_and_a_table_state_never_is():
    first = real_decide(None, alert(at=T0, eid="a1"), Context())
    kept = first.state
    second = real_decide(kept, alert(at=T0 + MIN, eid="a2"), Context(), owned=True)
    assert second.state is kept and has_seen(kept["seen"], seen_token("a2"))
    third = real_decide(kept, alert(at=T0 + 2 * MIN, eid="a3"), Context())
    assert third.state is not kept and not has_seen(kept["seen"], seen_token("a3"))


def test_memoised_runbook_selection_answers_what_the_scan_answers():
    from streams.model.runbooks import DEFAULT_RUNBOOK, runbook_matches
    from tests.decide.helpers import starter_set

    rset = starter_set()
    rng = random.Random(3)
    for _ in range(400):
        labels = {
            "alertname": rng.choice(["PrometheusTargetMissing", "HostHighCpuLoad", "PostgresqlDown", "Other"]),
            "service": rng.choice(SERVICES),
            "severity": rng.choice(["urgent", "warning", "info"]),
        }
        args = {
            "category": rng.choice(["availability", "cpu", "other"]),
            "severity": labels["severity"],
            "event_type": rng.choice(["alert.firing", "agent.failed", "pr.created"]),
            "kind": rng.choice(["telemetry", "webhook"]),
        }
        scanned = next(
            (rb for rb in rset.runbooks if rb.trigger is None and runbook_matches(rb.match, labels, **args)),
            DEFAULT_RUNBOOK,
        )
        assert rset.select(labels, **args) is scanned
        assert rset.select(dict(labels), **args) is scanned  # the remembered answer


def test_seen_keeps_the_last_ids_as_fixed_width_tokens_and_matches_only_whole_tokens():
    seen = ""
    for i in range(70):
        seen = remember(seen, seen_token(f"event-{i}"), 64)
    assert len(seen) == 64 * SEEN_TOKEN_CHARS
    assert has_seen(seen, seen_token("event-69")) and has_seen(seen, seen_token("event-6"))
    assert not has_seen(seen, seen_token("event-5"))
    token = seen_token("timer:acme:a-very-long-session-key:grp:1:" + "x" * 80)
    assert len(token) == SEEN_TOKEN_CHARS
    assert not has_seen("ab" + token + "c" * (SEEN_TOKEN_CHARS - 2), token)


def test_the_sessions_table_keeps_states_encoded_and_reads_older_json_ones():
    import json

    state = real_decide(None, alert(at=T0, eid="a1"), Context()).state
    raw = encode_state(state)
    assert raw[:1] == STATE_MARK
    back, fresh = decode_state(raw)
    assert back == state and back is not state and fresh
    assert decode_state(json.dumps(state, separators=(",", ":")).encode()) == (state, True)  # an older changelog's
    assert decode_state(state) == (state, False)  # a table that holds states as they are: decide copies
    assert decode_state(None) == (None, False)
    # a state read from the table decides as the JSON-era state did
    event = alert(at=T0 + MIN, eid="a2")
    assert real_decide(back, event, Context(), owned=True) == real_decide(state, event, Context())


def test_an_event_time_past_the_year_9999_read_from_kafka_is_dead_lettered_and_the_batch_goes_on(caplog):
    """Found from outside: such an event (any producer can write one to the topic) was decided, and its
    decision then crashed the digest's fold (``day_of``: year 146140482 is out of range)."""
    tables, dead, out, stream = dict_tables(), [], FakeOut(), FakeStream()
    agent = decide_agent(tables, dead)
    far = alert("HostHighCpuLoad", at=2**62, session="acme:api:0", eid="far")
    fine = alert("HostHighCpuLoad", at=T0, session="acme:api:0", eid="fine")
    with caplog.at_level("ERROR"):
        asyncio.run(agent.handle(stream, [message(far, offset=0), message(fine, offset=1)], out))
    assert [(d["offset"], d["reason"]) for d in dead] == [
        (0, "occurred_at: 4611686018427387904 is past the year 9999 (epoch milliseconds expected)")
    ]
    assert not caplog.records  # a bad event is a dead letter's reason, not a traceback in the log
    decided = [CODEC.decode(v) for t, _, v in out.records if t.endswith("decisions")]
    assert [d["event_id"] for d in decided] == ["fine"]
    assert decode_state(tables.sessions["acme:api:0"])[0]["clock"] == T0  # the far time left no mark


def test_a_tombstone_on_an_events_topic_is_dead_lettered_and_the_batch_goes_on():
    """A null value raised TypeError out of the batch: decide retried the batch for ever, the partition stalled."""
    tables, dead, out, stream = dict_tables(), [], FakeOut(), FakeStream()
    agent = decide_agent(tables, dead)
    fine = alert("HostHighCpuLoad", at=T0, session="acme:api:0", eid="fine")
    tombstone = message(fine, offset=0)
    tombstone.message.value = None
    asyncio.run(agent.handle(stream, [tombstone, message(fine, offset=1)], out))
    assert [(d["offset"], d["reason"], d["value"]) for d in dead] == [
        (0, "no value (a null record: a tombstone)", None)
    ]
    assert [CODEC.decode(v)["event_id"] for t, _, v in out.records if t.endswith("decisions")] == ["fine"]


def test_an_event_keyed_by_another_session_is_dead_lettered_and_its_own_session_untouched():
    """Found from outside (every record type written to every topic of a running ``opsloop dev``, under
    random keys): a copy of an event keyed for another session sits on another partition, and was decided
    there as a fresh session beside the real one (``grouped`` again, its group timers twice)."""
    tables, dead, out, stream = dict_tables(), [], FakeOut(), FakeStream()
    agent = decide_agent(tables, dead)
    ev = alert("HostHighCpuLoad", at=T0, session="acme:api:0", eid="e1")
    stray = message(ev, offset=0)
    stray.message.key = b"acme:alert:Other:db"
    asyncio.run(agent.handle(stream, [stray, message(ev, offset=1)], out))
    assert [(d["offset"], d["reason"]) for d in dead] == [
        (0, "session_key: the record is keyed 'acme:alert:Other:db', not by its session key")
    ]
    assert [CODEC.decode(v)["event_id"] for t, _, v in out.records if t.endswith("decisions")] == ["e1"]
    unkeyed = message(alert("HostHighCpuLoad", at=T0 + MIN, session="acme:api:0", eid="e2"), offset=2)
    unkeyed.message.key = None  # a record without a key is left to the envelope's checks, as before
    asyncio.run(agent.handle(stream, [unkeyed], out))
    assert len(dead) == 1 and has_seen(decode_state(tables.sessions["acme:api:0"])[0]["seen"], seen_token("e2"))
