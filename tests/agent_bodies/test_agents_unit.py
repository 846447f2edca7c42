"""Each agent's body without faust or Kafka: dict tables, a fake producer, real codec and decide.

The worker tests run the same classes on the real broker; these pin what each body
does with one batch or one tick.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, TypeVar

from agents.decide import DecideAgent
from agents.digest import DigestAgent
from agents.scheduler import Scheduler
from agents.timers import REPROMOTE_AFTER_S, Ticker
from streams.core.digest import delta, digest_item
from streams.core.state import decode_state, has_seen, seen_token
from streams.core.timers import PartitionClock, cron_event
from streams.kafka.batchsend import partition_for_key
from streams.kafka.codec import default_codec
from streams.settings import Settings, TimerSettings
from tests.decide.helpers import MIN, T0, URGENT_DOWN, alert, starter_set, webhook

CODEC = default_codec()
T = TypeVar("T")
RSET = starter_set()


@dataclass
class FakeOut:
    """A produce batcher that keeps what it was given."""

    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    flushed: int = 0

    def add(self, topic: str, key: bytes, value: bytes) -> None:
        self.records.append((topic, key, value))

    async def flush(self) -> None:
        self.flushed += 1

    def decoded(self, topic: str) -> list[dict[str, Any]]:
        return [CODEC.decode(v) for t, _, v in self.records if t == topic]


class FakeStream:
    """What DecideAgent.write needs of a faust stream: the current event, settable."""

    def __init__(self) -> None:
        self.current_event = None
        self.pointed: list[Any] = []

    def _set_current_event(self, event: Any) -> None:
        self.pointed.append(event)
        self.current_event = event


def recording_send(sent: list[Any], keep: Callable[[bytes, bytes], Any]) -> Callable[[bytes, bytes], Any]:
    """A producer's send as the ticker and the scheduler call it: ``keep(key, value)`` goes to ``sent``, and
    the broker's acknowledgement is a future already settled."""

    async def send(key: bytes, value: bytes) -> asyncio.Future[None]:
        sent.append(keep(key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    return send


def run_counting_turns(work: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """``work()``'s result, and how many turns of the event loop another task got while it ran."""

    async def both() -> tuple[T, int]:
        turns = 0
        task = asyncio.ensure_future(work())
        while not task.done():
            turns += 1
            await asyncio.sleep(0)
        return await task, turns

    return asyncio.run(both())


def message(event: dict, partition: int = 0, offset: int = 0, value: bytes | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        message=SimpleNamespace(
            topic="events.telemetry",
            partition=partition,
            offset=offset,
            key=event["session_key"].encode(),
            value=CODEC.encode("opsloop.Event", event) if value is None else value,
        )
    )


def decide_agent(tables: SimpleNamespace, dead: list, digest: Any = None) -> DecideAgent:
    async def dead_letter(key, value):
        dead.append(CODEC.decode(value))

    return DecideAgent(
        settings=Settings.from_env(),
        codec=CODEC,
        runbooks=RSET,
        classify=lambda events: [URGENT_DOWN] * len(events),
        tables=tables,
        clock=PartitionClock(),
        partitions={"outbox": 12, "decisions": 12, "digest.counts": 12},
        dead_letters=dead_letter,
        digest=digest,
    )


def dict_tables() -> SimpleNamespace:
    return SimpleNamespace(sessions={}, timers={}, silences={}, inhibitors={})


def test_decide_agent_batch_produces_then_writes_state_and_the_decisions_writes():
    tables, dead, out, stream = dict_tables(), [], FakeOut(), FakeStream()
    agent = decide_agent(tables, dead)
    events = [
        alert(at=T0, eid="a1"),
        alert(at=T0 + MIN, instance="api-2:9100", eid="a2"),
        webhook(
            "silence.created",
            at=T0,
            session="acme:silences",
            eid="s1",
            body={"matchers": ['service="db"'], "starts_at": T0, "ends_at": T0 + 60 * MIN},
        ),
    ]
    batch = [message(e, partition=3, offset=i) for i, e in enumerate(events)]
    batch.insert(1, message(events[0], value=b"\x00not avro"))
    asyncio.run(agent.handle(stream, batch, out))
    assert out.flushed == 1
    decisions = out.decoded("decisions")
    assert [d["event_id"] for d in decisions if d["kind"] != "timer"] == ["a1", "a2", "s1"]
    session = events[0]["session_key"]
    state, fresh = decode_state(tables.sessions[session])  # kept encoded (streams.core.state.encode_state)
    assert fresh and isinstance(tables.sessions[session], bytes)
    assert (
        state is not None
        and state["alerts"]
        and has_seen(state["seen"], seen_token("a1"))
        and has_seen(state["seen"], seen_token("a2"))
    )
    assert tables.timers[session]["p"] == 3 and tables.timers[session]["t"] == state["timers"]
    assert tables.inhibitors[session][0]["severity"] == "urgent"
    assert list(tables.silences) and json.loads(next(iter(tables.silences.values())))["matchers"] == ['service="db"']
    assert [(d["stage"], d["value"]) for d in dead] == [("decide", b"\x00not avro")]
    assert stream.current_event is None  # restored after the writes


def test_a_large_batch_is_folded_in_slices_with_turns_of_the_loop_between_and_the_same_records(monkeypatch):
    """A batch of 3 slices and a bit: other tasks (the consumer's fetch, the sinks' lanes) run between slices
    of the decoding and of the folding; the classifier is called once a slice; records and tables are those
    of the batch folded in one go."""
    from agents import decide as decide_module

    events = [alert(at=T0 + i * 1000, instance=f"api-{i % 7}:9100", eid=f"e{i}") for i in range(200)]

    def run(slice_size: int) -> tuple[list, dict, int, int]:
        monkeypatch.setattr(decide_module, "DECIDE_SLICE", slice_size)
        tables, dead, out, stream = dict_tables(), [], FakeOut(), FakeStream()
        agent = decide_agent(tables, dead)
        calls = []
        agent.classify = lambda batch: calls.append(len(batch)) or [URGENT_DOWN] * len(batch)  # type: ignore[method-assign]
        _, turns = run_counting_turns(
            lambda: agent.handle(stream, [message(e, offset=i) for i, e in enumerate(events)], out)
        )
        assert calls == ([200] if slice_size >= 200 else [64, 64, 64, 8]) and not dead
        return out.records, dict(tables.sessions), out.flushed, turns

    sliced, whole = run(64), run(1000)
    assert sliced[0] == whole[0] and sliced[1] == whole[1]
    assert sliced[3] >= whole[3] + 7  # a turn of the loop between each of the 4 slices decoded, then of the 4 folded


def test_decide_agent_falls_back_to_the_keyword_rules_when_the_model_raises():
    tables, out = dict_tables(), FakeOut()
    agent = decide_agent(tables, [])

    def broken(events):
        raise RuntimeError("model bug")

    agent._classify = broken
    batch = agent.decide_batch([(message(alert(at=T0, eid="a1")), alert(at=T0, eid="a1"))], tables.sessions, out)
    record = batch.last[alert(at=T0)["session_key"]].record
    assert record["fallback"] is True and record["classifier"].startswith("keyword")


def test_ticker_promotes_due_timers_of_active_partitions_once():
    clock = PartitionClock()
    clock.observe(1, T0 + 10 * MIN)
    sent: list[tuple[bytes, dict]] = []
    send = recording_send(sent, lambda key, value: (key, CODEC.decode(value)))

    timers = {
        "s1": {
            "p": 1,
            "org": "acme",
            "t": {
                "grp:1": {"at": T0, "purpose": "group", "step": 0, "data": {}},
                "later": {"at": T0 + 60 * MIN, "purpose": "group", "step": 0, "data": {}},
            },
        },
        "s2": {"p": 2, "org": "acme", "t": {"grp:1": {"at": T0, "purpose": "group", "step": 0, "data": {}}}},
    }
    ticker = Ticker(timers=timers, clock=clock, settings=TimerSettings(clock="event"), codec=CODEC, send=send)

    async def run():
        first = await ticker.tick({1, 2}, mono=100.0)
        again = await ticker.tick({1, 2}, mono=101.0)  # inside the re-promotion pause
        return first, again

    assert asyncio.run(run()) == (1, 0)  # partition 2 has no clock yet; "later" is not due
    assert sent[0][0] == b"s1" and sent[0][1]["payload"]["timer_id"] == "grp:1" and sent[0][1]["occurred_at"] == T0


def test_ticker_promotes_a_storm_of_due_timers_in_slices_with_turns_of_the_loop_between(monkeypatch):
    """200 group notices due at once: all promoted, and other tasks (the sinks' lanes) run between slices."""
    from agents import timers as timers_module

    def run(slice_size: int) -> tuple[int, list[bytes], int]:
        monkeypatch.setattr(timers_module, "PROMOTE_SLICE", slice_size)
        clock = PartitionClock()
        clock.observe(1, T0 + 10 * MIN)
        sent: list[bytes] = []
        send = recording_send(sent, lambda key, value: key)

        timers = {
            f"s{i}": {"p": 1, "org": "acme", "t": {"grp:1": {"at": T0 + i, "purpose": "group", "step": 0, "data": {}}}}
            for i in range(200)
        }
        ticker = Ticker(timers=timers, clock=clock, settings=TimerSettings(clock="event"), codec=CODEC, send=send)

        promoted, turns = run_counting_turns(lambda: ticker.tick({1}, mono=100.0))
        return promoted, sent, turns

    sliced, whole = run(64), run(10**6)
    assert sliced[0] == whole[0] == 200 and sliced[1] == whole[1]
    assert sorted(sliced[1]) == sorted(f"s{i}".encode() for i in range(200))
    assert sliced[2] >= whole[2] + 3  # a turn of the loop after each of the 3 full slices


def test_ticker_forgets_old_promotions_oldest_first_and_keeps_a_re_promoted_one():
    ticker = Ticker(timers={}, clock=PartitionClock(), settings=TimerSettings(clock="event"), codec=CODEC, send=None)
    keep = 10 * REPROMOTE_AFTER_S
    for i in range(1000):
        ticker.promoted[("s", f"t{i}", 0)] = float(i)
    ticker.promoted.pop(("s", "t0", 0))
    ticker.promoted[("s", "t0", 0)] = 999.0  # promoted again later: moves to the end, as _tick does
    ticker._forget_promoted(500.0 + keep)
    assert ("s", "t0", 0) in ticker.promoted  # re-promoted at 999: recent
    assert ("s", "t499", 0) not in ticker.promoted and ("s", "t500", 0) in ticker.promoted
    assert len(ticker.promoted) == 501  # t500..t999 and t0
    assert all(mono - at <= keep for mono, at in [(500.0 + keep, at) for at in ticker.promoted.values()])


def test_scheduler_sends_the_due_slot_once_from_the_owning_partition():
    schedule = replace(RSET.schedules[0], enabled=True)  # the starter set ships it disabled
    partitions = 12
    owner = partition_for_key(schedule.session_key.encode(), partitions)
    clock = PartitionClock()
    slot = cron_event(schedule.session_key, schedule.org, schedule.name, 0, 0)  # for the shape only
    sent: list[dict] = []

    send = recording_send(sent, lambda key, value: CODEC.decode(value))

    from streams.core.timers import slot_before

    now = slot_before(schedule.cron, schedule.timezone, T0) + 1000
    clock.observe(owner, now)
    scheduler = Scheduler(
        schedules=[schedule],
        partitions=partitions,
        clock=clock,
        settings=TimerSettings(clock="event"),
        codec=CODEC,
        send=send,
    )
    assert asyncio.run(scheduler.tick({(owner + 1) % partitions})) == 0
    assert asyncio.run(scheduler.tick({owner})) == 1
    assert asyncio.run(scheduler.tick({owner})) == 0
    assert sent[0]["type"] == slot["type"] and sent[0]["payload"]["data"]["schedule"] == schedule.name


def test_a_fresh_scheduler_with_the_starter_schedules_dispatches_nothing_at_boot():
    from streams.core.timers import slot_before

    assert RSET.schedules and not any(s.enabled for s in RSET.schedules)
    partitions = 12
    clock = PartitionClock()
    sent: list[bytes] = []

    send = recording_send(sent, lambda key, value: value)

    for schedule in RSET.schedules:  # every schedule's slot is due and within its catch-up window
        owner = partition_for_key(schedule.session_key.encode(), partitions)
        clock.observe(owner, slot_before(schedule.cron, schedule.timezone, T0) + 1000)
    scheduler = Scheduler(
        schedules=RSET.schedules,
        partitions=partitions,
        clock=clock,
        settings=TimerSettings(clock="event"),
        codec=CODEC,
        send=send,
    )
    assert asyncio.run(scheduler.tick(range(partitions))) == 0 and sent == []
    enabled = Scheduler(  # the same set, enabled, would dispatch each at once: what the flag prevents
        schedules=[replace(s, enabled=True) for s in RSET.schedules],
        partitions=partitions,
        clock=clock,
        settings=TimerSettings(clock="event"),
        codec=CODEC,
        send=send,
    )
    assert asyncio.run(enabled.tick(range(partitions))) == len(RSET.schedules)


def digest_agent(table: dict, counts: list, effects: list) -> DigestAgent:
    """The starter set's digest on event time, its deltas and effects decoded into ``counts`` and ``effects``."""

    async def nothing(*_: Any) -> dict:
        return {}

    return DigestAgent(
        config=RSET.digest,
        routing=RSET.routing,
        codec=CODEC,
        prefix="",
        table=table,
        timers=TimerSettings(clock="event"),
        source_tps=[],
        schemas={"deliveries": "opsloop.Delivery"},
        send_counts=recording_send(counts, lambda key, value: CODEC.decode(value)),
        send_effect=recording_send(effects, lambda key, value: CODEC.decode(value)),
        committed=nothing,
        ends=nothing,
    )


def test_digest_agent_folds_counts_and_sends_a_due_day_once():
    table: dict = {}
    counts: list = []
    effects: list = []
    agent = digest_agent(table, counts, effects)
    decision = {"org": "acme", "outcome": "notified", "session_key": "acme:x", "decided_at": T0}
    _, item = digest_item("decisions", 0, 7, decision)
    record = delta("acme", [item])
    agent.fold(
        SimpleNamespace(topic="digest.counts", partition=0, offset=0, value=CODEC.encode("opsloop.DigestDelta", record))
    )
    assert table["acme"]["p"] == 0 and table["acme"]["days"]
    agent.fold(
        SimpleNamespace(
            topic="digest.counts",
            partition=0,
            offset=1,  # the next day, past the org's hour
            value=CODEC.encode("opsloop.DigestDelta", delta("acme", [{**item, "offset": 8, "at": T0 + 36 * 60 * MIN}])),
        )
    )
    asyncio.run(agent.tick({0}))
    assert len(effects) >= 1 and all(e["notify"]["fields"].get("org", "acme") == "acme" for e in effects)
    assert counts[-1]["sent_day"]
    sent = len(effects)
    asyncio.run(agent.tick({0}))
    assert len(effects) == sent  # sent once


def test_the_digest_collector_skips_a_record_of_another_type_on_deliveries_and_counts_the_rest():
    """A decision written to ``deliveries`` (well-formed Avro, another schema) failed collect's whole batch on
    the fields a receipt has, again and again, and the org's digest stopped counting (found by a probe that
    wrote every record type to every topic of a running ``opsloop dev``)."""
    counts: list[Any] = []
    agent = digest_agent({}, counts, [])
    decision = {
        **{f: "x" for f in ("decision_id", "event_id", "kind", "type", "category", "severity", "classifier")},
        **{"org": "acme", "session_key": "acme:alert:A:b", "decided_at": T0, "outcome": "notified"},
    }
    receipt = {
        "effect_id": "e1",
        "session_key": "acme:alert:A:b",
        "channel": "slack",
        "status": "delivered",
        "completed_at": T0,
    }
    stray = CODEC.encode("opsloop.Decision", decision)
    messages = [
        SimpleNamespace(topic="deliveries", partition=0, offset=0, value=stray),
        SimpleNamespace(topic="deliveries", partition=0, offset=1, value=CODEC.encode("opsloop.Delivery", receipt)),
    ]
    asyncio.run(agent.collect(messages))
    (sent,) = counts
    assert sent["org"] == "acme" and [(i["offset"], i["status"]) for i in sent["items"]] == [(1, "delivered")]


def test_a_digest_delta_whose_item_time_is_no_day_is_skipped_and_the_folds_after_it_count():
    """A delta no opsloop process writes (an item at 2**62 ms) moved the partition's event-time clock past
    every day before its fold failed; every fold after it on that partition failed too (year out of range)."""
    table: dict = {}
    agent = digest_agent(table, [], [])
    decision = {"org": "acme", "outcome": "notified", "session_key": "acme:x", "decided_at": T0}
    _, item = digest_item("decisions", 0, 7, decision)

    def fold(offset: int, items: list) -> None:
        value = CODEC.encode("opsloop.DigestDelta", delta("acme", items))
        try:
            agent.fold(SimpleNamespace(topic="digest.counts", partition=0, offset=offset, value=value))
        except Exception:  # noqa: BLE001 - as the faust agent around it does: logged, not counted
            pass

    fold(0, [{**item, "offset": 1, "at": 2**62}])
    fold(1, [item])
    assert list(table["acme"]["days"]) == ["2023-11-14"] and agent.clock.watermarks[0] == T0
