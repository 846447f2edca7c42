"""Offsets are released in order per partition; a shutdown gives back claims that sent nothing."""

from __future__ import annotations

import asyncio
import time

from agents.sinks.dispatch import InOrderAcks
from agents.sinks.ledger import Ledger
from tests.sinks.conftest import receivers_for
from tests.sinks.fakes import Answer, FakeServices
from tests.sinks.helpers import Harness, make_effect


def test_in_order_acks_never_pass_an_unsettled_offset() -> None:
    released: list[tuple[str, int]] = []
    acks = InOrderAcks(released.append)
    entries = {(p, o): acks.add(p, (p, o)) for p in ("p0", "p1") for o in range(4)}
    acks.settle("p0", entries[("p0", 2)])
    acks.settle("p0", entries[("p0", 1)])
    acks.settle("p1", entries[("p1", 0)])
    assert released == [("p1", 0)]  # p0@0 is still pending: nothing of p0 may go
    acks.settle("p0", entries[("p0", 0)])
    assert released == [("p1", 0), ("p0", 0), ("p0", 1), ("p0", 2)]
    assert acks.pending() == 4


def test_abandoned_acks_hand_back_everything_unreleased_and_release_nothing_after() -> None:
    released: list[tuple[str, int]] = []
    acks = InOrderAcks(released.append)
    entries = {o: acks.add("p0", ("p0", o)) for o in range(4)}
    acks.settle("p0", entries[0])
    acks.settle("p0", entries[2])  # settled behind the unsettled p0@1: handed back, not released
    assert acks.abandon() == [("p0", 1), ("p0", 2), ("p0", 3)]
    acks.settle("p0", entries[1])  # a delivery finishing during the stop
    assert released == [("p0", 0)] and acks.abandoned and acks.pending() == 0


def test_reset_acks_hand_back_everything_unreleased_and_track_what_comes_after() -> None:
    released: list[tuple[str, int]] = []
    acks = InOrderAcks(released.append)
    old = {o: acks.add("p0", ("p0", o)) for o in range(3)}
    acks.settle("p0", old[1])  # behind the unsettled p0@0: handed back, not released
    assert acks.reset() == [("p0", 0), ("p0", 1), ("p0", 2)]
    acks.settle("p0", old[0])  # a delivery of the old generation finishing: releases nothing
    new = acks.add("p0", ("p0", 0))  # read again after the rebalance
    acks.settle("p0", new)
    assert released == [("p0", 0)] and not acks.abandoned and acks.pending() == 0


def test_hand_back_takes_the_waiting_effects_out_and_settle_taken_waits_for_the_one_being_sent(
    fakes: FakeServices, pg_engine
) -> None:
    """One lane, a receiver answering after 0.3 s, four effects: the first is being sent when the rebalance
    comes; the other three go back unclaimed (their futures cancelled), the first is waited for and delivered
    once, and the three are delivered once each when read again."""
    receivers, env = receivers_for(fakes)
    effects = [make_effect("slack-a", "slack", title=f"rebalance {i}", session_key=f"rb-{i}") for i in range(4)]
    before = len(fakes.got("slack", "slack-a"))
    fakes.shed_past(100, 0.3)
    try:

        async def go() -> tuple[int, int, list[str], list[str]]:
            async with Harness(receivers, pg_engine, env) as h:
                futures = [await h.submit(e) for e in effects]
                await h.until(lambda _h: len(fakes.got("slack", "slack-a")) > before, 10, "the first send")
                handed = h.dispatcher.hand_back()
                taken = await asyncio.wait_for(h.dispatcher.settle_taken(), 10)
                assert [f.cancelled() for f in futures] == [False, True, True, True]
                first = futures[0].result()
                unclaimed = [Ledger(pg_engine).get(e["effect_id"], "slack-a") for e in effects[1:]]
                assert unclaimed == [None, None, None]
                h.dispatcher.resume()
                again = await h.run(*effects[1:], timeout=20)  # the records read again
                return handed, taken, [first], again

        handed, taken, first, again = asyncio.run(go())
        answered = [r for r in fakes.got("slack", "slack-a")[before:] if r.answered == 200]
    finally:
        fakes.shed_past(None)
    assert (handed, taken) == (3, 1)
    assert first == ["delivered"] and again == ["delivered"] * 3
    for i in range(4):  # each sent once
        assert sum(f"rebalance {i}" in r.body.decode() for r in answered) == 1, i


def test_hand_back_recalls_a_delivery_waiting_out_a_retry_after_and_gives_its_claim_back(
    fakes: FakeServices, pg_engine
) -> None:
    """A 429 with Retry-After: 4 s: the delivery waits to try again, nothing of it landed. A rebalance
    recalls it (its claim given back) instead of waiting the 4 s; read again, it is delivered once."""
    receivers, env = receivers_for(fakes)
    fakes.script("slack", "slack-b", Answer(429, "slow down", {"Retry-After": "4"}))
    effect = make_effect("slack-b", "slack", title="recalled", session_key="recall-1")
    before = len(fakes.got("slack", "slack-b"))

    async def go() -> tuple[int, float, bool, list[str]]:
        async with Harness(receivers, pg_engine, env) as h:
            future = await h.submit(effect)
            await h.until(lambda _h: len(fakes.got("slack", "slack-b")) > before, 10, "the refused send")
            await asyncio.sleep(0.2)  # the refusal is back: it waits out the Retry-After now
            handed = h.dispatcher.hand_back()
            started = time.monotonic()
            await asyncio.wait_for(h.dispatcher.settle_taken(), 10)
            took = time.monotonic() - started
            released = Ledger(pg_engine).get(effect["effect_id"], "slack-b") is None
            assert future.cancelled()
            h.dispatcher.resume()
            return handed, took, released, await h.run(effect, timeout=20)  # the record read again

    handed, took, released, again = asyncio.run(go())
    assert handed == 1 and took < 1.0 and released
    assert again == ["delivered"]
    assert [r.answered for r in fakes.got("slack", "slack-b")[before:]] == [429, 200]


def test_hand_back_recalls_a_delivery_waiting_for_another_owners_claim(fakes: FakeServices, pg_engine) -> None:
    """Another live worker holds the claim (a rebalance overlap): the lane polls for it. A rebalance recalls
    it at once (nothing of ours claimed or sent) and the other owner's claim is left as it was."""
    receivers, env = receivers_for(fakes)
    effect = make_effect("slack-b", "slack", title="claimed elsewhere", session_key="elsewhere-1")
    ledger = Ledger(pg_engine).create()
    now = int(time.time() * 1000)
    ledger.beat("other-worker", now)
    assert ledger.claim(effect["effect_id"], "slack-b", "slack", "other-worker", now, 600_000).state.name == "NEW"
    before = len(fakes.got("slack", "slack-b"))

    async def go() -> tuple[int, float, bool]:
        async with Harness(receivers, pg_engine, env) as h:
            future = await h.submit(effect)
            await asyncio.sleep(0.3)  # claimed: BUSY, so the lane waits for the other owner
            handed = h.dispatcher.hand_back()
            started = time.monotonic()
            await asyncio.wait_for(h.dispatcher.settle_taken(), 10)
            return handed, time.monotonic() - started, future.cancelled()

    handed, took, cancelled = asyncio.run(go())
    assert handed == 1 and took < 0.5 and cancelled
    row = ledger.get(effect["effect_id"], "slack-b")
    assert row is not None and row.owner == "other-worker" and row.status == "claimed"
    assert len(fakes.got("slack", "slack-b")) == before  # nothing sent


def test_shutdown_while_parked_by_retry_after_gives_the_claim_back(fakes: FakeServices, pg_engine) -> None:
    """A 429 is a definite 'not delivered': the next owner sends at once, without the ambiguous path."""
    receivers, env = receivers_for(fakes)
    fakes.script("slack", "slack-b", Answer(429, "rate_limited", {"Retry-After": "10"}))
    effect = make_effect("slack-b", "slack", title="parked at shutdown")
    before = len(fakes.got("slack", "slack-b"))

    async def first() -> None:
        async with Harness(receivers, pg_engine, env, owner="stopping") as h:
            await h.submit(effect)
            # The 429 was judged: the destination is paused for its Retry-After. Nothing awaits between
            # setting the pause and the retry's sleep (agents/sinks/delivery.py), so the delivery is
            # now waiting out the Retry-After, its flight reset to "nothing landed".
            await h.until(
                lambda h: (d := h.destination("slack-b")) is not None and d.paused_until > time.monotonic(),
                10,
                "slack-b paused by the 429's Retry-After",
            )
            assert len(fakes.got("slack", "slack-b")) == before + 1

    asyncio.run(first())
    assert Ledger(pg_engine).get(effect["effect_id"], "slack-b") is None

    async def second():
        async with Harness(receivers, pg_engine, env, owner="next") as h:
            return await h.run(effect, timeout=10), h

    statuses, h = asyncio.run(second())
    assert statuses == ["delivered"] and h.emitter.receipts[0]["error"] is None
    assert [r.answered for r in fakes.got("slack", "slack-b")[before:]] == [429, 200]


def test_shutdown_after_a_send_keeps_the_claim(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    fakes.script("slack", "slack-c", Answer(200, "ok", hang_s=5))
    effect = make_effect("slack-c", "slack", title="in flight at shutdown")
    before = len(fakes.got("slack", "slack-c"))

    async def first() -> None:
        async with Harness(receivers, pg_engine, env, owner="stopping") as h:
            await h.submit(effect)
            deadline = time.monotonic() + 10
            while len(fakes.got("slack", "slack-c")) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.02)

    asyncio.run(first())
    row = Ledger(pg_engine).get(effect["effect_id"], "slack-c")
    assert row is not None and row.status == "claimed" and row.owner == "stopping"
