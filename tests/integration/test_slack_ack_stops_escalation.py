"""Issue 14: a Slack message's Acknowledge button stops the escalation chain, end to end.

A real ``opsloop ingest`` and a real ``opsloop worker`` share one topic prefix on the
session broker; timers run on event time (``OPSLOOP_TIMER_CLOCK=event``, see
tests/decide/scenario.py), so the test moves time with tick events instead of sleeping.

Two urgent ``PrometheusTargetMissing`` sessions on the same partition (the same
watermark, the same ticker passes) get the target-down chain: oncall-slack at once (the
route an urgent alert takes), a reminder there after 5 minutes, pagerduty-primary after 15. The Slack message of the
first (built by the Slack sink from the real notify effect, ``interactive: true``) is
acknowledged with a signed interactivity POST to ingest; forged, replayed and tampered
requests aimed at the second (the control) are refused and produce nothing. Event time
then passes both steps: the acknowledged session hears nothing more, the control is
escalated to on-call and paged at the same event time, so an ack that did nothing (or
a refused request that got through) fails the test.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx

from agents.sinks.channels import slack as slack_sink
from streams.ingest.slack import signature
from streams.kafka.reader import TopicReader
from streams.model.receivers import Receiver
from tests.decide.scenario import MIN, Topics, alert, same_partition, tick, worker_env
from tests.ingest.conftest import IngestServer, ingest_env

SIGNING_SECRET = f"slack-{secrets.token_hex(16)}"
RULE = "Prometheus target missing"  # availability, urgent: runbooks/target-down.yaml escalates
FLUSH = 30_000  # routing.yaml's group_wait: the chain starts at the group flush
STEP_ONCALL = FLUSH + 5 * MIN
STEP_PAGE = FLUSH + 15 * MIN
INTERACTIVE_SLACK = Receiver("oncall-slack", "slack", {"interactive": True})


def click(effect: dict[str, Any], action_id: str = "ack", user: str = "alice") -> dict[str, Any]:
    """The block_actions payload Slack POSTs when ``user`` presses ``action_id`` on the message of ``effect``."""
    message = slack_sink.build_payload(effect, INTERACTIVE_SLACK)
    button = next(
        b
        for a in message["attachments"]
        for blk in a["blocks"]
        if blk["type"] == "actions"
        for b in blk["elements"]
        if b.get("action_id") == action_id
    )
    return {
        "type": "block_actions",
        "trigger_id": f"trig-{uuid.uuid4().hex}",  # fresh per click: an accepted forgery would be a new event
        "user": {"id": f"U-{user}", "username": user},
        "response_url": "",
        "message": {"text": message["text"], "attachments": message["attachments"]},
        "actions": [
            {"action_id": action_id, "value": button["value"], "type": "button", "action_ts": str(time.time())}
        ],
    }


def form(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(body: bytes, *, ts: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    timestamp = str(int(time.time()) if ts is None else ts)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature(secret.encode(), timestamp, body),
    }


async def webhook_events(settings) -> list[dict[str, Any]]:
    """Everything on events.webhook (ingest's only topic for Slack actions), read to an idle second."""
    async with TopicReader(settings, ["events.webhook"]) as reader:
        return [r.value async for r in reader.records(idle_timeout=1.5) if r.value]


def test_slack_ack_button_stops_the_escalation_and_bad_requests_produce_nothing(
    topics, worker_factory, opsloop_env, kafka_bootstrap, tmp_path
):
    started = time.monotonic()
    ingest = IngestServer(
        ingest_env(
            kafka_bootstrap, opsloop_env["OPSLOOP_TOPIC_PREFIX"], OPSLOOP_INGEST_SLACK_SIGNING_SECRET=SIGNING_SECRET
        ),
        tmp_path / "ingest.log",
    )
    worker_factory(**worker_env(tmp_path))
    ingest.start()
    try:
        _run(topics, ingest)
    except BaseException:
        print(ingest.log()[-4000:])  # shown with the failure (the worker's log is attached by tests/conftest.py)
        raise
    finally:
        ingest.stop()
    print(f"took {time.monotonic() - started:.1f}s")


def _run(settings, ingest: IngestServer) -> None:
    # Event time near the wall clock: ingest stamps an ack with its own clock, which moves the
    # watermark of the session's partition; the chain's steps stay minutes in its future.
    t0 = (int(time.time()) - 60) * 1000
    tag = uuid.uuid4().hex[:6]
    acked = alert(RULE, service=f"api-{tag}", instance=f"api-{tag}:9100", at=t0)
    a = acked["session_key"]
    partitions = Topics(settings).partitions
    control_key = same_partition(
        a, (f"acme:alert:PrometheusTargetMissing:ctl-{tag}-{i}" for i in range(10_000)), partitions
    )
    control_service = control_key.rsplit(":", 1)[1]
    control = alert(RULE, service=control_service, instance=f"{control_service}:9100", at=t0)
    c = control["session_key"]
    assert c == control_key and c != a
    url = ingest.url("/ingest/slack/interactivity")

    def chain(t: Topics, session: str) -> list[tuple[str, str]]:
        return [(n["notify"]["receiver"], n["notify"]["action"]) for n in t.notifications(session)]

    async def run() -> tuple[Topics, list[dict[str, Any]]]:
        async with Topics(settings) as t, httpx.AsyncClient(timeout=30) as http:
            await t.push([acked, control])
            await t.until(lambda t: t.decided([acked["event_id"], control["event_id"]]), 60, "the two alerts")
            await t.push([tick(a, t0 + FLUSH + 1000), tick(c, t0 + FLUSH + 1000)])
            await t.until(
                lambda t: chain(t, a) == [("oncall-slack", "trigger")] and chain(t, c) == [("oncall-slack", "trigger")],
                60,
                "the chain's first step (oncall-slack) for both sessions",
            )
            [first] = t.notifications(a)
            [control_first] = t.notifications(c)
            # The session comes from the message: the button's value is what the Slack sink wrote for the effect.
            session = first["session_key"]
            assert session == a and first["notify"]["severity"] == "urgent"

            # The right click: signed with the app's secret, now.
            ack_body = form(click(first, user="alice"))
            answer = await http.post(url, content=ack_body, headers=signed_headers(ack_body))
            assert answer.status_code == 200, answer.text
            await t.until(
                lambda t: any(
                    d["session_key"] == a and d["type"] == "ack" and d["outcome"] == "acknowledged"
                    for d in t.decisions()
                ),
                30,
                "the ack decision",
            )

            # Bad requests, all naming the control session: had one got through, the control would be
            # acknowledged and its escalation below would not come.
            forged_body = form(click(control_first, user="mallory"))
            replayed_body = form(click(control_first, user="alice"))
            genuine = form(click(first, user="alice"))  # signed for the acked session, then edited in transit
            tampered_body = genuine.replace(quote_plus(a).encode(), quote_plus(c).encode())
            assert tampered_body != genuine
            bad = [
                ("forged", forged_body, signed_headers(forged_body, secret="not-the-signing-secret"), 403),
                ("replayed", replayed_body, signed_headers(replayed_body, ts=int(time.time()) - 6 * 60), 401),
                ("tampered", tampered_body, signed_headers(genuine), 403),
            ]
            for what, body, headers, status in bad:
                answer = await http.post(url, content=body, headers=headers)
                assert answer.status_code == status, (what, answer.status_code, answer.text)
                assert "error" in answer.json(), what
            events = await webhook_events(settings)

            # Event time passes both steps of the chain for both sessions (the same partition, the same
            # ticker passes). The ack is decided already: events of a session on two topics have no order.
            step1 = [tick(a, t0 + STEP_ONCALL + 2000), tick(c, t0 + STEP_ONCALL + 2000)]
            await t.push(step1)
            await t.until(
                lambda t: t.decided(e["event_id"] for e in step1) and len(t.notifications(c)) >= 2,
                60,
                "the control escalated to on-call",
            )
            step2 = [tick(a, t0 + STEP_PAGE + 2000), tick(c, t0 + STEP_PAGE + 2000)]
            await t.push(step2)
            await t.until(
                lambda t: t.decided(e["event_id"] for e in step2) and len(t.notifications(c)) >= 3,
                60,
                "the control paged",
            )
            # Nothing in flight: every timer due by then promoted, decided and read.
            await t.settled(a, t0 + STEP_PAGE + 2000, 60, "the pipeline settled")
            return t, events

    t, events = asyncio.run(run())

    # Ingest wrote exactly one event for the two sessions: the signed click's ack; the forged,
    # replayed and tampered requests produced nothing.
    mine = [e for e in events if e["session_key"] in (a, c)]
    assert [(e["session_key"], e["type"], e["payload"]["actor"]) for e in mine] == [(a, "ack", "alice")], mine
    # The acknowledged session: its first Slack message and nothing after (no on-call, no page).
    assert chain(t, a) == [("oncall-slack", "trigger")]
    assert not [d for d in t.decisions() if d["session_key"] == a and d["outcome"] == "escalated"]
    # The control, at the same event times: on-call after 5 minutes, PagerDuty after 15.
    assert chain(t, c) == [
        ("oncall-slack", "trigger"),
        ("oncall-slack", "trigger"),
        ("pagerduty-primary", "trigger"),
    ]
    assert [n["created_at"] - t0 for n in t.notifications(c)] == [FLUSH, STEP_ONCALL, STEP_PAGE]
    # (the ack cancelled the pending escalation timers)
    ack_decision = next(
        d for d in t.decisions() if d["event_id"] == mine[0]["event_id"] and d["outcome"] != "duplicate"
    )
    assert ack_decision["outcome"] == "acknowledged"
    cancelled = [e for e in t.effects() if e["event_id"] == mine[0]["event_id"] and e["type"] == "cancel_timers"]
    assert cancelled and cancelled[0]["cancel"]["prefix"] == "esc:"
