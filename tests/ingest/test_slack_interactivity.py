"""Slack interactivity against a real ingest on the real broker; response_url goes to a local aiohttp receiver."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

from agents.sinks.channels import slack as slack_sink
from streams.devtools.broker import free_port
from streams.ingest.slack import signature
from streams.model.receivers import Receiver
from tests.ingest.conftest import apply_topics, ingest_env, read_all_events, read_events, settings_for, wait_for

SIGNING_SECRET = f"slack-{secrets.token_hex(16)}"
WEBHOOK_TOPIC = ["events.webhook"]


@pytest.fixture(scope="module")
def module_env(kafka_bootstrap: str) -> dict[str, str]:
    env = ingest_env(kafka_bootstrap, f"s{uuid.uuid4().hex[:8]}.", OPSLOOP_INGEST_SLACK_SIGNING_SECRET=SIGNING_SECRET)
    apply_topics(settings_for(env))
    return env


class Receiver_:
    """A local aiohttp server standing in for Slack's response_url."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.Response(text="ok")

    def start(self) -> Receiver_:
        self.thread.start()

        async def up() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/response", self._handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        self.runner = asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/response"


@pytest.fixture(scope="module")
def response_receiver() -> Iterator[Receiver_]:
    receiver = Receiver_().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def block_actions(session: str, action_id: str = "ack", response_url: str = "", user: dict | None = None) -> dict:
    effect = {
        "effect_id": "e1",
        "session_key": session,
        "org": "acme",
        "runbook": "default",
        "created_at": 0,
        "notify": {
            "severity": "warning",
            "title": "TargetDown on api",
            "body": "down",
            "fields": {},
            "links": [],
            "action": "trigger",
        },
    }
    message = slack_sink.build_payload(effect, Receiver("chat", "slack", {"interactive": True}))
    button = next(
        b
        for a in message["attachments"]
        for blk in a["blocks"]
        if blk["type"] == "actions"
        for b in blk["elements"]
        if b["action_id"] == action_id
    )
    return {
        "type": "block_actions",
        "trigger_id": f"trig-{uuid.uuid4().hex}",
        "user": user or {"id": "U1", "username": "alice"},
        "response_url": response_url,
        "message": {"text": message["text"], "attachments": message["attachments"]},
        "actions": [
            {"action_id": action_id, "value": button["value"], "type": "button", "action_ts": str(time.time())}
        ],
    }


def signed(payload: dict, *, ts: int | None = None, secret: str = SIGNING_SECRET) -> tuple[bytes, dict[str, str]]:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()) if ts is None else ts)
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature(secret.encode(), timestamp, body),
    }


def _events_of(settings, session: str) -> list[dict]:
    return [
        r.value for r in read_all_events(settings, idle=1.5, topics=WEBHOOK_TOPIC) if r.value["session_key"] == session
    ]


def test_a_signed_button_click_acknowledges_and_updates_the_message(
    ingest_server, module_settings, http, response_receiver
):
    session = f"acme:alert:slack:{uuid.uuid4().hex[:6]}"
    payload = block_actions(session, response_url=response_receiver.url)
    body, headers = signed(payload)
    started = time.monotonic()
    answer = http.post(ingest_server.url("/ingest/slack/interactivity"), content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started < 3
    records = read_events(
        module_settings, lambda rs: any(r.value["session_key"] == session for r in rs), topics=WEBHOOK_TOPIC
    )
    (event,) = [r.value for r in records if r.value["session_key"] == session]
    assert event["type"] == "ack" and event["org"] == "acme" and event["payload"]["actor"] == "alice"

    update = wait_for(
        lambda: [r for r in response_receiver.received if session in json.dumps(r)], 10, "response_url update"
    )[0]
    assert update["replace_original"] is True
    blocks = [b for a in update["attachments"] for b in a["blocks"]]
    assert not [b for b in blocks if b["type"] == "actions"]
    assert "Acknowledged by alice" in blocks[-1]["elements"][0]["text"]

    # Slack retrying the same request (same trigger id) produces nothing new.
    assert http.post(ingest_server.url("/ingest/slack/interactivity"), content=body, headers=headers).status_code == 200
    assert len(_events_of(module_settings, session)) == 1


@pytest.mark.parametrize("action_id,etype", [("silence_1h", "silence.created"), ("approve", "remediation.approved")])
def test_other_buttons_give_the_same_events_as_links(ingest_server, module_settings, http, action_id, etype):
    session = f"acme:alert:slack:{uuid.uuid4().hex[:6]}"
    payload = block_actions(session, action_id if action_id != "approve" else "ack", user={"id": "U2"})
    payload["actions"][0]["action_id"] = action_id
    body, headers = signed(payload)
    assert http.post(ingest_server.url("/ingest/slack/interactivity"), content=body, headers=headers).status_code == 200
    records = read_events(
        module_settings, lambda rs: any(r.value["session_key"] == session for r in rs), topics=WEBHOOK_TOPIC
    )
    (event,) = [r.value for r in records if r.value["session_key"] == session]
    assert event["type"] == etype and event["payload"]["actor"] == "U2"


def test_forged_replayed_or_tampered_requests_are_refused(ingest_server, module_settings, http):
    session = f"acme:alert:slack:{uuid.uuid4().hex[:6]}"
    url = ingest_server.url("/ingest/slack/interactivity")
    body, headers = signed(block_actions(session))
    forged_body, forged = signed(block_actions(session), secret="not-the-secret")
    old_body, old = signed(block_actions(session), ts=int(time.time()) - 6 * 60)
    other = block_actions(session)
    tampered = urlencode({"payload": json.dumps({**other, "user": {"id": "U0", "username": "mallory"}})}).encode()
    cases = [
        (forged_body, forged, 403),
        (old_body, old, 401),  # correctly signed, but more than 5 minutes old: a replay
        (tampered, headers, 403),  # a valid signature of another body
        (body, {k: v for k, v in headers.items() if k != "X-Slack-Signature"}, 401),
        (body, {**headers, "X-Slack-Request-Timestamp": "yesterday"}, 401),
        (body, {**headers, "X-Slack-Request-Timestamp": "9" * 400}, 401),  # no float holds it: was a 500
        (body, {**headers, "X-Slack-Signature": ("v0=" + "é" * 64).encode("latin-1")}, 403),  # was a 500
    ]
    for raw, hdrs, status in cases:
        answer = http.post(url, content=raw, headers=hdrs)
        assert answer.status_code == status, (answer.status_code, answer.text)
        assert "error" in answer.json()
    assert _events_of(module_settings, session) == []


def test_a_signed_payload_that_is_not_strict_json_is_a_400(ingest_server, http):
    """Past the signature, the payload was read with plain json.loads: 3,000 levels of brackets were a 500
    (RecursionError) and NaN was taken; ingest's strict reader answers them as it does every body."""
    url = ingest_server.url("/ingest/slack/interactivity")
    for raw, reason in (("[" * 3000 + "]" * 3000, "nested deeper"), ('{"type": NaN}', "NaN")):
        body = urlencode({"payload": raw}).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature(SIGNING_SECRET.encode(), timestamp, body),
        }
        answer = http.post(url, content=body, headers=headers)
        assert answer.status_code == 400 and reason in answer.json()["error"], answer.text


def test_formatter_adds_buttons_only_when_interactive():
    effect = {
        "effect_id": "e1",
        "session_key": "acme:s",
        "org": "acme",
        "runbook": "memory-oom",
        "created_at": 0,
        "notify": {
            "severity": "warning",
            "title": "OOM",
            "body": "",
            "fields": {},
            "action": "trigger",
            "links": [
                {"label": "Acknowledge", "url": "https://x/ingest/ack?a=1"},
                {"label": "Approve", "url": "https://x/ingest/ack?a=2"},
                {"label": "Reject", "url": "https://x/ingest/ack?a=3"},
                {"label": "Runbook", "url": "https://runbooks/x"},
            ],
        },
    }

    def buttons(settings: dict) -> list[dict]:
        message = slack_sink.build_payload(effect, Receiver("chat", "slack", settings))
        return [
            b
            for a in message["attachments"]
            for blk in a["blocks"]
            if blk["type"] == "actions"
            for b in blk["elements"]
        ]

    interactive = buttons({"interactive": True})
    assert [b["action_id"] for b in interactive] == ["ack", "approve", "reject", "silence_1h", "silence_4h", "link-3"]
    assert json.loads(interactive[0]["value"]) == {"session": "acme:s", "org": "acme"}
    plain = buttons({})
    assert [b["text"]["text"] for b in plain] == ["Acknowledge", "Approve", "Reject", "Runbook"]
    assert all("url" in b for b in plain)
    resolved = dict(effect, notify=dict(effect["notify"], action="resolve"))
    message = slack_sink.build_payload(resolved, Receiver("chat", "slack", {"interactive": True}))
    assert not [
        b
        for a in message["attachments"]
        for b in a["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if "action_id" in e and e["action_id"] == "ack"
    ]


def test_buttons_name_the_incident_their_message_told_of():
    """The buttons stand in for the signed links, so they name the same episode: an Approve button of an
    incident that has ended must not run the next one's remediation (decide: ``stale-action``)."""
    from streams.ingest.errors import BadRequest
    from streams.ingest.slack import _target

    link = "https://x/ingest/ack?session=acme%3As&action=ack&org=acme&expires=9&jti=j&episode=3&sig=00"
    effect = {
        "effect_id": "e1",
        "session_key": "acme:s",
        "org": "acme",
        "created_at": 0,
        "notify": {"severity": "warning", "title": "OOM", "body": "", "fields": {}, "action": "trigger"},
    }
    effect["notify"]["links"] = [{"label": "Acknowledge", "url": link}]
    message = slack_sink.build_payload(effect, Receiver("chat", "slack", {"interactive": True}))
    values = {
        b["value"]
        for a in message["attachments"]
        for blk in a["blocks"]
        if blk["type"] == "actions"
        for b in blk["elements"]
        if "value" in b
    }
    assert [json.loads(v) for v in values] == [{"session": "acme:s", "org": "acme", "episode": 3}]
    assert _target(values.pop(), "default") == ("acme:s", "acme", 3)
    assert _target('{"session": "acme:s"}', "default") == ("acme:s", "default", None)  # a button of before
    assert _target("acme:s", "default") == ("acme:s", "default", None)
    for bad in ('"3"', "-1", "true", "1.5"):
        with pytest.raises(BadRequest, match="episode"):
            _target('{"session": "acme:s", "episode": ' + bad + "}", "default")
