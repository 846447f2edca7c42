"""The sinks under a storm: ledger claims and completions shared by a batch, lanes per destination.

Real PostgreSQL ledger, real HTTP to the bench's webhook receiver (in a thread). What is
asserted is what the storm path promises: one transaction per batch of effects rather
than two per effect, several deliveries to one destination at once while one session's
effects still arrive in order, and a crash between a batch's claim and its completion
still delivering each effect once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa

from agents.sinks.batching import GroupCommit
from agents.sinks.ledger import ClaimRequest, ClaimState, Completion, Ledger
from streams.devtools.bench.receiver import WebhookReceiver
from streams.model.receivers import Receiver
from tests.sinks.helpers import Harness, make_effect

KEY = "test-signing-key"
ENV = {"TEST_HOOK_KEY": KEY}


@pytest.fixture
def slow_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver("slow", delay_s=0.05, limit=64).start()
    yield receiver
    receiver.stop()


def hooks(receiver: WebhookReceiver, name: str = "hooks") -> dict[str, Receiver]:
    return {name: Receiver(name, "webhook", {"url": f"{receiver.url}/{name}"}, {"signing_key": "TEST_HOOK_KEY"})}


def count_commits(engine: sa.Engine) -> Counter[str]:
    counts: Counter[str] = Counter()
    sa.event.listen(engine, "commit", lambda _conn: counts.update(["commit"]))
    return counts


def test_a_storm_of_effects_shares_ledger_transactions_and_each_is_delivered_once(pg_engine) -> None:
    n, names = 300, ("hooks-a", "hooks-b", "hooks-c")
    effects = [make_effect(names[i % 3], "webhook", session_key=f"storm:host-{i}") for i in range(n)]
    commits = count_commits(pg_engine)
    receiver = WebhookReceiver("prompt").start()

    async def go() -> list[str]:
        receivers = {k: v for name in names for k, v in hooks(receiver, name).items()}
        # lanes and claim-ahead as an operator sets them for receivers that deduplicate by key (defaults: 1 and 1)
        async with Harness(receivers, pg_engine, ENV, concurrency_per_destination=8, claim_ahead=16) as h:
            commits.clear()  # the ledger's create() and the first beat are not the storm's
            return await h.run(*effects)

    try:
        assert asyncio.run(go()) == ["delivered"] * n
    finally:
        receiver.stop()
    keys = Counter(d.identity for d in receiver.deliveries)
    assert set(keys) == {e["effect_id"] for e in effects} and set(keys.values()) == {1}
    # Claimed and completed one by one this is 2 commits per effect (600); batched, a fraction of that.
    assert commits["commit"] <= n / 10, commits


def test_one_destination_takes_several_sessions_at_once_and_each_session_in_order(
    slow_receiver: WebhookReceiver, pg_engine
) -> None:
    sessions = [f"s-{i}" for i in range(16)]
    effects = [make_effect("hooks", "webhook", session_key=s, title=f"{s} #{k}") for k in range(3) for s in sessions]

    async def go() -> list[str]:
        async with Harness(hooks(slow_receiver), pg_engine, ENV, concurrency_per_destination=8) as h:
            return await h.run(*effects)

    assert asyncio.run(go()) == ["delivered"] * len(effects)
    assert 1 < slow_receiver.peak <= 8, slow_receiver.peak  # lanes at once, never more than the bound
    order = {e["effect_id"]: (e["session_key"], e["notify"]["title"]) for e in effects}
    for s in sessions:
        got = [order[d.identity][1] for d in slow_receiver.deliveries if order[d.identity][0] == s]
        assert got == [f"{s} #{k}" for k in range(3)], got


def test_a_receivers_own_concurrency_overrides_the_default_of_one_lane(
    slow_receiver: WebhookReceiver, pg_engine
) -> None:
    sessions = [f"c-{i}" for i in range(16)]
    fast = {n: replace(r, concurrency=4) for n, r in hooks(slow_receiver, "hooks-dedup").items()}
    receivers = {**fast, **hooks(slow_receiver, "hooks-plain")}
    to_fast = [make_effect("hooks-dedup", "webhook", session_key=s) for s in sessions]

    async def go(effects: list[dict]) -> list[str]:
        async with Harness(receivers, pg_engine, ENV) as h:  # the settings' default: one lane per destination
            return await h.run(*effects)

    assert asyncio.run(go(to_fast)) == ["delivered"] * len(to_fast)
    assert 1 < slow_receiver.peak <= 4, slow_receiver.peak  # the receiver's concurrency, never more
    slow_receiver.peak = 0
    to_plain = [make_effect("hooks-plain", "webhook", session_key=s) for s in sessions]
    assert asyncio.run(go(to_plain)) == ["delivered"] * len(to_plain)
    assert slow_receiver.peak == 1, slow_receiver.peak


def test_a_crash_between_a_batch_claim_and_its_completion_still_delivers_each_effect_once(
    slow_receiver: WebhookReceiver, pg_engine
) -> None:
    effects = [make_effect("hooks", "webhook", session_key=f"crash-{i}") for i in range(40)]
    ledger = Ledger(pg_engine).create()
    # A worker that claimed the batch in one transaction, completed half of it (they were delivered), and died:
    # it never beats again, and its partition has a newer generation now.
    claims = ledger.claim_many(
        [ClaimRequest(e["effect_id"], "hooks", "webhook", partition=0, generation=4) for e in effects],
        "dead",
        0,
        60_000,
    )
    assert {c.state for c in claims} == {ClaimState.NEW}
    done = effects[::2]
    assert ledger.complete_many(
        [Completion(e["effect_id"], "hooks", "delivered", 1, 200, None) for e in done], "dead", 1
    ) == [True] * len(done)

    async def go() -> list[str]:
        async with Harness(hooks(slow_receiver), pg_engine, ENV) as h:
            h.dispatcher.generation = lambda: 5
            return await h.run(*effects)

    statuses = asyncio.run(go())
    sent = Counter(d.identity for d in slow_receiver.deliveries)
    left = {e["effect_id"] for e in effects[1::2]}
    assert set(sent) == left and set(sent.values()) == {1}, "a completed effect was re-sent, or one was sent twice"
    assert Counter(statuses) == {"skipped": len(done), "delivered": len(left)}
    rows = {r.effect_id: r for r in ledger.rows()}
    assert {rows[i].status for i in rows} == {"delivered"}
    assert {rows[i].claims for i in left} == {2} and {rows[e["effect_id"]].claims for e in done} == {1}


def test_claim_many_gives_a_key_repeated_in_one_batch_to_the_first_only(pg_engine) -> None:
    ledger = Ledger(pg_engine).create()
    req = ClaimRequest("e1", "hooks", "webhook")
    states = [c.state for c in ledger.claim_many([req, ClaimRequest("e2", "hooks", "webhook"), req], "w1", 0, 1000)]
    assert states == [ClaimState.NEW, ClaimState.NEW, ClaimState.BUSY]
    assert [c.state for c in ledger.claim_many([req], "w2", 10, 1000)] == [ClaimState.BUSY]  # w1's live claim
    assert ledger.complete_many([Completion("e1", "hooks", "delivered", 1, 200, None)], "w2", 20) == [False]


def test_group_commit_batches_what_queues_behind_a_running_batch() -> None:
    seen: list[list[int]] = []

    async def run(batch: list[int]) -> list[int]:
        seen.append(batch)
        await asyncio.sleep(0.01)
        return [x * 10 for x in batch]

    async def go() -> list[int]:
        commit: GroupCommit[int, int] = GroupCommit(run, max_batch=4)
        return list(await asyncio.gather(*(commit(i) for i in range(10))))

    assert asyncio.run(go()) == [i * 10 for i in range(10)]
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_the_breaker_takes_refusals_of_a_destination_still_answering_as_load_not_as_down() -> None:
    from agents.sinks.delivery import Breaker

    now = [100.0]
    breaker = Breaker(3, 30.0, 300.0, clock=lambda: now[0], alive_s=1.0)
    breaker.success()
    for _ in range(10):  # eight lanes refused at once, and again, while others are served: not down
        now[0] += 0.01
        breaker.failure(started=now[0])
    assert breaker.state == "closed"
    breaker.failure(started=now[0] - 5.0)  # a request older than the last counted outcome: no vote either
    assert breaker.failures == 0
    now[0] += 2.0  # no success for longer than alive_s: each failure counts again
    for _ in range(3):
        now[0] += 0.1
        breaker.failure(started=now[0])
    assert breaker.state == "open"


def test_complete_many_says_which_rows_of_a_batch_were_taken_over(pg_engine) -> None:
    ledger = Ledger(pg_engine).create()
    ledger.claim_many([ClaimRequest(f"e{i}", "hooks", "webhook") for i in range(4)], "w1", 0, 1000)
    assert ledger.claim("e2", "hooks", "webhook", "w2", 5000, 1000).state is ClaimState.STALE  # lease over: w2's now
    done = ledger.complete_many([Completion(f"e{i}", "hooks", "delivered", 1, 200, None) for i in range(4)], "w1", 6000)
    assert done == [True, True, False, True]
    assert {r.effect_id: (r.owner, r.status) for r in ledger.rows()} == {
        "e0": ("w1", "delivered"),
        "e1": ("w1", "delivered"),
        "e2": ("w2", "claimed"),
        "e3": ("w1", "delivered"),
    }
