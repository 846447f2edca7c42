"""A host's concurrency learned from its 503s: the rule on its own, then against a real receiver that sheds
load, several destinations on it with many lanes each, the ledger on PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import zlib
from dataclasses import replace

from agents.sinks.base import HttpResponse
from agents.sinks.concurrency import AdaptiveConcurrency, is_shed
from tests.sinks.conftest import receivers_for
from tests.sinks.fakes import FakeServices
from tests.sinks.helpers import FAST, Harness, make_effect


def limiter() -> tuple[AdaptiveConcurrency, list[float]]:
    now = [0.0]
    return AdaptiveConcurrency(clock=lambda: now[0]), now


def fill(limit: AdaptiveConcurrency, n: int) -> None:
    async def go() -> None:
        for _ in range(n):
            await asyncio.wait_for(limit.acquire(), 1)

    asyncio.run(go())


def test_no_limit_until_the_first_refusal_then_one_less_than_was_in_flight_per_refusal() -> None:
    limit, now = limiter()
    fill(limit, 24)  # none waits
    assert limit.allowed == math.inf and limit.in_flight == 24
    for _ in range(20):  # a receiver that serves 4 refuses the other 20
        limit.release(shed=True)
    assert limit.allowed == 4 == limit.in_flight and limit.refusals == 20
    limit.release()  # another failure (a 500, a refused connection): no news
    assert limit.allowed == 4


def test_it_grows_by_one_per_round_trip_only_while_it_is_the_bound() -> None:
    limit, now = limiter()
    fill(limit, 10)
    limit.release(shed=True)  # 9 in flight, limit 9
    assert limit.allowed == 9 and limit.in_flight == 9
    limit.release(ok=True)  # it was the bound (9 of 9): 9 + 1/9
    assert round(limit.limit, 3) == 9.111
    before = limit.limit
    limit.release(ok=True)  # 7 in flight of 9 allowed: not the bound, no news
    assert limit.limit == before
    fill(limit, 2)  # 9 in flight again
    for answered in range(1, 10):
        limit.release(ok=True)
        fill(limit, 1)
        assert limit.allowed == (9 if answered < 9 else 10), answered  # a round trip's worth of answers: one more


def test_a_waiting_request_goes_when_one_is_answered_and_a_quiet_minute_lifts_the_limit() -> None:
    limit, now = limiter()

    async def go() -> None:
        await limit.acquire()
        await limit.acquire()
        limit.release(shed=True)  # 1 in flight: limit 1
        assert limit.allowed == 1
        first = asyncio.ensure_future(limit.acquire())
        second = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        assert not first.done() and not second.done()
        limit.release()  # a place comes free: the first is woken ...
        first.cancel()  # ... and cancelled before it runs: it hands the place on
        await asyncio.wait_for(second, 1)
        assert first.cancelled() and limit.in_flight == 1
        now[0] = 61.0  # no refusal for a minute
        await asyncio.wait_for(limit.acquire(), 1)
        assert limit.allowed == math.inf and limit.in_flight == 2

    asyncio.run(go())


def test_503_and_a_429_without_retry_after_are_refusals_a_429_with_one_is_a_pause() -> None:
    assert is_shed(HttpResponse(503, {}, ""))
    assert is_shed(HttpResponse(429, {}, ""))
    assert not is_shed(HttpResponse(429, {"retry-after": "3"}, ""))
    assert not is_shed(HttpResponse(500, {}, ""))
    assert not is_shed(HttpResponse(200, {}, ""))


def test_lanes_past_what_the_receiver_serves_learn_its_limit_instead_of_refusal_after_refusal(
    fakes: FakeServices, pg_engine
) -> None:
    """Three Slack destinations with 8 lanes each (24 at once) on a receiver that serves 4 at once, 0.05 s each,
    and answers 503 past that: every effect is delivered once, with ~20 refusals while the limit is learned and
    about one per limit's worth of requests after (47 in all when measured; without the learned limit 445, and
    28 effects dead-lettered past their 6 attempts)."""
    receivers, env = receivers_for(fakes)
    names = ("slack-a", "slack-b", "slack-c")
    lanes = {name: replace(receivers[name], concurrency=8) for name in names}
    effects = [
        make_effect(name, "slack", session_key=f"cluster/node-{i}/Storm", title=f"storm {i}")
        for i in range(60)
        for name in names
    ]
    before = len(fakes.got("slack"))
    fakes.shed_past(4, 0.05)
    try:

        async def go() -> list[str]:
            async with Harness(lanes, pg_engine, env, policy=replace(FAST, max_attempts=6)) as h:
                statuses = await h.run(*effects, timeout=120)
                assert h.deliverer.host_limit(fakes.url("slack", "slack-a")).allowed <= 8
                return statuses

        statuses = asyncio.run(go())
        answered = [r.answered for r in fakes.got("slack")[before:]]
    finally:
        fakes.shed_past(None)
    assert statuses == ["delivered"] * len(effects)
    assert answered.count(200) == len(effects)  # each once
    refused = answered.count(503)
    assert refused <= len(effects) // 3, f"{refused} refusals for {len(effects)} effects"


def test_a_request_refused_while_others_of_ours_are_in_flight_waits_in_line_without_spending_an_attempt(
    fakes: FakeServices, pg_engine
) -> None:
    """One attempt per effect, two lanes, a receiver that serves one at a time: the second request is refused
    while the first is in flight, and goes again when the first is answered, not dead-lettered for its one
    attempt (which is what happens when the refusal counts as an attempt)."""
    receivers, env = receivers_for(fakes)
    two_lanes = {"slack-a": replace(receivers["slack-a"], concurrency=2)}
    keys = ("cluster/node-0/Storm", "cluster/node-1/Storm", "cluster/node-2/Storm")
    one, other = next((a, b) for a in keys for b in keys if zlib.crc32(a.encode()) % 2 != zlib.crc32(b.encode()) % 2)
    effects = [make_effect("slack-a", "slack", session_key=key) for key in (one, other)]  # one on each lane
    before = len(fakes.got("slack", "slack-a"))
    fakes.shed_past(1, 0.2)
    try:

        async def go() -> tuple[list[str], list[int]]:
            async with Harness(two_lanes, pg_engine, env, policy=replace(FAST, max_attempts=1)) as h:
                statuses = await h.run(*effects, timeout=30)
                return statuses, [r["attempts"] for r in h.emitter.receipts]

        statuses, attempts = asyncio.run(go())
        answered = [r.answered for r in fakes.got("slack", "slack-a")[before:]]
    finally:
        fakes.shed_past(None)
    assert answered.count(503) >= 1, answered  # the two lanes did meet the limit
    assert statuses == ["delivered", "delivered"]
    assert sorted(attempts) == [1, 2]  # the refused one was sent twice, within its budget of one attempt
