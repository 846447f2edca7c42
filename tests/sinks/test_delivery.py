"""Delivery faults against real local HTTP receivers, with the ledger on PostgreSQL.

Each test drives the dispatcher in-process (real httpx, real aiohttp receivers,
real SQL ledger) and checks what the receiver got, the receipts and the dead
letters: retries, Retry-After, the ambiguous path, permanent errors, redelivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import pytest

from agents.sinks.delivery import Breaker
from agents.sinks.ledger import Ledger
from streams.logs import RedactSecrets
from streams.model.receivers import RateLimit, Receiver
from tests.sinks.conftest import SECRETS, receivers_for
from tests.sinks.fakes import Answer, FakeServices
from tests.sinks.helpers import FAST, Harness, make_effect


def run(coro):
    return asyncio.run(coro)


def test_every_http_channel_delivers_once_with_a_valid_payload(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    effects = [
        make_effect("slack-a", "slack"),
        make_effect("teams", "teams"),
        make_effect("pd", "pagerduty", thread_key="inc-1"),
        make_effect("hooks", "webhook"),
        make_effect("log", "log"),
    ]
    before = len(fakes.requests)

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(*effects), h

    statuses, h = run(go())
    assert statuses == ["delivered"] * 5
    got = fakes.requests[before:]
    assert sorted(r.kind for r in got) == ["hook", "pagerduty", "slack", "teams"]
    assert all(r.errors == [] for r in got), [r.errors for r in got]
    assert [r["status"] for r in h.emitter.receipts] == ["delivered"] * 5 and h.emitter.dead == []
    pd = next(r for r in h.emitter.receipts if r["channel"] == "pagerduty")
    assert pd["http_status"] == 202 and pd["attempts"] == 1 and pd["latency_ms"] > 0
    rows = {row.receiver: row for row in Ledger(pg_engine).rows()}
    assert {r.status for r in rows.values()} == {"delivered"} and set(rows) == {
        "slack-a",
        "teams",
        "pd",
        "hooks",
    }  # log skips it


def test_429_with_retry_after_is_delivered_after_the_wait_not_before(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    fakes.script("slack", "slack-b", Answer(429, "rate_limited", {"Retry-After": "1"}))
    effect = make_effect("slack-b", "slack")
    before = len(fakes.got("slack", "slack-b"))

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(effect), h

    statuses, h = run(go())
    got = fakes.got("slack", "slack-b")[before:]
    assert statuses == ["delivered"]
    assert [r.answered for r in got[-2:]] == [429, 200]
    gap = got[-1].at - got[-2].at
    assert gap >= 1.0, f"retried {gap:.3f}s after a 429 with Retry-After: 1"
    assert h.emitter.receipts[0]["attempts"] == 2


def test_500_three_times_then_200_is_delivered_exactly_once(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    fakes.script("teams", "teams", *[Answer(500, "boom")] * 3)
    effect = make_effect("teams", "teams", title="Disk almost full")
    before = len(fakes.got("teams", "teams"))

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(effect), h

    statuses, h = run(go())
    got = fakes.got("teams", "teams")[before:]
    assert statuses == ["delivered"]
    assert [r.answered for r in got] == [500, 500, 500, 202]
    assert sum(1 for r in got if r.answered < 300) == 1
    receipt = h.emitter.receipts[0]
    assert receipt["status"] == "delivered" and receipt["attempts"] == 4 and receipt["http_status"] == 202
    assert Ledger(pg_engine).get(effect["effect_id"], "teams").attempts == 4


def test_a_hang_times_out_into_the_ambiguous_path_retried_once(fakes: FakeServices, pg_engine) -> None:
    """Slack has no idempotency: after a read timeout it is paused and tried exactly once more."""
    receivers, env = receivers_for(fakes)
    fakes.script("slack", "slack-c", Answer(200, "ok", hang_s=3), Answer(200, "ok", hang_s=3))
    hung = make_effect("slack-c", "slack", title="hang twice")
    before = len(fakes.got("slack", "slack-c"))

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(hung), h

    statuses, h = run(go())
    got = fakes.got("slack", "slack-c")[before:]
    assert statuses == ["ambiguous"]
    assert len(got) == 2, "one send and exactly one retry after the pause"
    assert got[1].at - got[0].at >= FAST.read_timeout_s + FAST.ambiguous_pause_s - 0.05
    receipt = h.emitter.receipts[0]
    assert receipt["status"] == "ambiguous" and receipt["attempts"] == 2 and "outcome unknown" in receipt["error"]
    row = Ledger(pg_engine).get(hung["effect_id"], "slack-c")
    assert row.status == "ambiguous" and row.ambiguous == 2
    assert h.emitter.dead[0]["error_type"] == "AmbiguousError" and h.emitter.dead[0]["stage"] == "sink:slack"


def test_one_ambiguous_timeout_then_success_is_delivered_and_flagged(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    fakes.script("slack", "slack-c", Answer(200, "ok", hang_s=3))
    effect = make_effect("slack-c", "slack", title="hang once")

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(effect), h

    statuses, h = run(go())
    assert statuses == ["delivered"]
    assert "may be duplicated" in h.emitter.receipts[0]["error"]
    assert Ledger(pg_engine).get(effect["effect_id"], "slack-c").ambiguous == 1


def test_pagerduty_is_idempotent_so_a_timeout_is_retried_like_any_transient(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    fakes.script("pagerduty", "pd", Answer(202, "", hang_s=3), Answer(202, "", hang_s=3), Answer(503, "down"))
    effect = make_effect("pd", "pagerduty", thread_key="inc-hang")
    before = len(fakes.got("pagerduty", "pd"))

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(effect), h

    statuses, h = run(go())
    got = fakes.got("pagerduty", "pd")[before:]
    assert statuses == ["delivered"] and len(got) == 4
    assert {r.json["dedup_key"] for r in got} == {"inc-hang"}  # the same incident every time: PagerDuty dedupes
    assert Ledger(pg_engine).get(effect["effect_id"], "pd").ambiguous == 0


def test_400_is_dead_lettered_with_the_reason_and_others_are_unaffected(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    env = {**env, "OPSLOOP_TEST_PD_KEY": "too-short-key"}  # PagerDuty answers 400: routing_key must be 32 characters
    bad = make_effect("pd", "pagerduty")
    good = [make_effect("slack-a", "slack"), make_effect("hooks", "webhook"), make_effect("teams", "teams")]
    before = len(fakes.got("pagerduty", "pd"))

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(bad, *good), h

    statuses, h = run(go())
    assert statuses == ["dead", "delivered", "delivered", "delivered"]
    assert len(fakes.got("pagerduty", "pd")) - before == 1, "a 400 is final: not retried"
    [letter] = h.emitter.dead
    assert letter["stage"] == "sink:pagerduty" and letter["error_type"] == "PermanentError"
    assert "400" in letter["reason"] and "routing_key" in letter["reason"]
    assert letter["source_topic"] == "outbox" and letter["value"]
    assert h.emitter.status(bad["effect_id"]) == ["dead"]


def test_a_redelivered_effect_with_a_completed_ledger_row_is_not_sent_again(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    effect = make_effect("slack-a", "slack", title="redelivered")

    async def go(owner: str):
        async with Harness(receivers, pg_engine, env, owner=owner) as h:
            return await h.run(effect), h

    before = len(fakes.got("slack", "slack-a"))
    first, _ = run(go("worker-1"))
    second, h2 = run(go("worker-2"))
    assert first == ["delivered"] and second == ["skipped"]
    assert len(fakes.got("slack", "slack-a")) - before == 1
    assert h2.emitter.receipts[0]["status"] == "skipped" and "already delivered" in h2.emitter.receipts[0]["error"]


def test_a_stale_claim_takes_the_ambiguous_path_for_slack(fakes: FakeServices, pg_engine) -> None:
    """A process claimed, maybe sent, and died before completing: after the lease, one careful retry."""
    receivers, env = receivers_for(fakes)
    effect = make_effect("slack-a", "slack", title="claimed by the dead")
    ledger = Ledger(pg_engine).create()
    ledger.claim(effect["effect_id"], "slack-a", "slack", "dead-worker", now_ms=0, lease_ms=1)
    before = len(fakes.got("slack", "slack-a"))

    async def go():
        async with Harness(receivers, pg_engine, env, owner="new-worker") as h:
            return await h.run(effect), h

    statuses, h = run(go())
    assert statuses == ["delivered"] and len(fakes.got("slack", "slack-a")) - before == 1
    row = ledger.get(effect["effect_id"], "slack-a")
    assert row.claims == 2 and row.ambiguous == 1 and row.owner == "new-worker"
    assert "may be duplicated" in h.emitter.receipts[0]["error"]


def test_unknown_receiver_and_missing_secret_are_dead_lettered_by_name(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    env = {k: v for k, v in env.items() if k != "OPSLOOP_TEST_TEAMS_URL"}
    unknown = make_effect("nobody", "slack")
    missing = make_effect("teams", "teams")

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(unknown, missing), h

    statuses, h = run(go())
    assert statuses == ["dead", "dead"]
    reasons = [d["reason"] for d in h.emitter.dead]
    assert "unknown receiver 'nobody'" in reasons[0]
    assert "OPSLOOP_TEST_TEAMS_URL" in reasons[1] and "not set" in reasons[1]


def test_rate_limit_spaces_deliveries_to_one_destination(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes, rate=RateLimit(2, 1.0))
    effects = [make_effect("hooks", "webhook", title=f"rate {i}") for i in range(5)]
    before = len(fakes.got("hook", "hooks"))

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(*effects)

    assert run(go()) == ["delivered"] * 5
    got = fakes.got("hook", "hooks")[before:]
    span = got[-1].at - got[0].at
    assert span >= 1.4, f"5 deliveries at 2/s (burst 2) spanned only {span:.2f}s"


def test_breaker_opens_parks_and_probes() -> None:
    now = [0.0]
    breaker = Breaker(threshold=3, cooldown_s=10, cooldown_max_s=40, clock=lambda: now[0])
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed" and breaker.wait_s() == 0
    breaker.failure()
    assert breaker.state == "open" and breaker.wait_s() == 10
    now[0] = 10.0
    assert breaker.state == "half-open" and breaker.wait_s() == 0
    breaker.failure()  # the probe failed: parked twice as long
    assert breaker.state == "open" and breaker.wait_s() == 20
    now[0] = 30.0
    breaker.success()
    assert breaker.state == "closed" and breaker.cooldown == 10 and breaker.opened == 2


def test_an_open_breaker_parks_the_destination_instead_of_sending(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    policy = replace(FAST, breaker_threshold=2, breaker_cooldown_s=30, max_total_s=3)
    fakes.script("slack", "slack-b", *[Answer(503, "down")] * 2)
    first, second = make_effect("slack-b", "slack", title="opens"), make_effect("slack-b", "slack", title="parked")
    before = len(fakes.got("slack", "slack-b"))

    async def go():
        async with Harness(receivers, pg_engine, env, policy=policy) as h:
            return await h.run(first, second), h

    statuses, h = run(go())
    assert statuses == ["dead", "dead"]
    assert len(fakes.got("slack", "slack-b")) - before == 2, "parked: nothing sent while the circuit is open"
    assert "parked (circuit open)" in h.emitter.dead[1]["reason"]


def test_secrets_never_reach_logs_receipts_or_dead_letters(
    fakes: FakeServices, pg_engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures whose texts would carry secrets: a refused secret URL, a service echoing the key."""
    receivers, env = receivers_for(fakes)
    env = {**env, "OPSLOOP_TEST_SLACK_A_URL": "http://127.0.0.1:9/services/T000SECRET/B000SECRET/XXXXSECRETTOKEN"}
    receivers["pd"] = Receiver(
        "pd", "pagerduty", {"url": fakes.url("pagerduty", "pd")}, {"routing_key": "OPSLOOP_TEST_PD_KEY"}
    )
    fakes.script(
        "pagerduty",
        "pd",
        Answer(
            400,
            json.dumps(
                {"status": "invalid event", "errors": [f"unknown routing_key {SECRETS['OPSLOOP_TEST_PD_KEY']}"]}
            ),
        ),
    )
    effects = [make_effect("slack-a", "slack"), make_effect("pd", "pagerduty"), make_effect("hooks", "webhook")]
    caplog.handler.addFilter(RedactSecrets())  # what the worker's logging config installs on every handler
    caplog.set_level(logging.DEBUG)
    policy = replace(FAST, max_attempts=2)

    async def go():
        async with Harness(receivers, pg_engine, env, policy=policy) as h:
            return await h.run(*effects), h

    statuses, h = run(go())
    assert statuses == ["dead", "dead", "delivered"]
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    records = json.dumps(h.emitter.receipts) + json.dumps([{**d, "value": None, "key": None} for d in h.emitter.dead])
    secret_values = [
        env["OPSLOOP_TEST_SLACK_A_URL"],
        "/services/T000SECRET/B000SECRET/XXXXSECRETTOKEN",
        SECRETS["OPSLOOP_TEST_PD_KEY"],
        SECRETS["OPSLOOP_TEST_HOOK_KEY"],
        env["OPSLOOP_TEST_SLACK_B_URL"],
    ]
    assert "dead-lettered" in logged and "retrying" in logged  # the log did talk about these failures
    for value in secret_values:
        assert value not in logged, f"secret in logs: {value[:12]}..."
        assert value not in records, f"secret in records: {value[:12]}..."
    assert "**********" in records  # the echoed routing key was masked, not dropped


def test_429s_with_retry_after_are_paced_by_the_time_budget_not_the_attempt_cap(fakes: FakeServices, pg_engine) -> None:
    """A fault probe: 45 s of 429s with Retry-After: 2 dead-lettered urgent pages after 6 attempts in 12 s, though
    the 120 s budget had room. The receiver said when; those attempts do not count against the cap."""
    receivers, env = receivers_for(fakes)
    fakes.script("slack", "slack-b", *[Answer(429, "rate_limited", {"Retry-After": "1"})] * 3)
    effect = make_effect("slack-b", "slack", title="rate limited three times")
    before = len(fakes.got("slack", "slack-b"))

    async def go():
        async with Harness(receivers, pg_engine, env, policy=replace(FAST, max_attempts=2)) as h:
            return await h.run(effect, timeout=20), h

    statuses, h = run(go())
    assert statuses == ["delivered"]
    assert [r.answered for r in fakes.got("slack", "slack-b")[before:]] == [429, 429, 429, 200]
    assert h.emitter.receipts[0]["attempts"] == 4


def test_a_retry_after_past_the_time_budget_is_dead_lettered_at_once(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    fakes.script("slack", "slack-b", Answer(429, "rate_limited", {"Retry-After": "600"}))
    effect = make_effect("slack-b", "slack", title="retry after ten minutes")
    before = len(fakes.got("slack", "slack-b"))

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(effect, timeout=10), h

    statuses, h = run(go())
    assert statuses == ["dead"] and len(fakes.got("slack", "slack-b")) - before == 1
    assert "Retry-After 600s is past the time budget" in h.emitter.dead[0]["reason"]


def test_teams_error_inside_a_200_is_retried_as_that_error(fakes: FakeServices, pg_engine) -> None:
    receivers, env = receivers_for(fakes)
    fakes.script(
        "teams", "teams", Answer(200, "Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0")
    )
    effect = make_effect("teams", "teams", title="throttled inside a 200")
    before = len(fakes.got("teams", "teams"))

    async def go():
        async with Harness(receivers, pg_engine, env) as h:
            return await h.run(effect), h

    statuses, h = run(go())
    assert statuses == ["delivered"]
    assert [r.answered for r in fakes.got("teams", "teams")[before:]] == [200, 202]
    assert h.emitter.receipts[0]["attempts"] == 2
