"""Slack interactivity in: ``POST /ingest/slack/interactivity`` (the buttons of opsloop's Slack messages).

Slack POSTs ``application/x-www-form-urlencoded`` ``payload=<json>`` with
``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=<hex HMAC-SHA256 of
"v0:<timestamp>:<raw body>">`` keyed by the app's signing secret
(``OPSLOOP_INGEST_SLACK_SIGNING_SECRET``; without it the route is 404). A timestamp
more than 5 minutes from ingest's clock is refused (401: a replayed request), as is a
missing signature (401) or a wrong one (403), before the body is parsed.

A ``block_actions`` payload whose action id is one of :data:`ACTION_IDS` (``ack``,
``silence_1h``, ``silence_4h``, ``approve``, ``reject``) and whose value names the
session (``{"session": ..., "org": ...}`` as the Slack sink writes it, or the bare
session key) becomes the same event an action link produces
(:func:`streams.ingest.actions.action_event`), with the Slack user as the actor and
the interaction's ``trigger_id`` as its unique id (Slack's own retry of a request is a
duplicate). Other actions (a URL button's click notice) are answered 200 and ignored.

Slack wants an answer within 3 seconds: the produce gets at most
:data:`ANSWER_WITHIN_S`; a slower one finishes in the background. The message is then
updated through ``response_url`` (POST JSON; fire and forget with a short timeout):
the clicked buttons are removed and a line says who did what.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from streams.credentials import same_credential
from streams.ingest.actions import DONE, action_event, action_principal
from streams.ingest.errors import BadRequest, Forbidden, NotFound, Unauthorized
from streams.ingest.fields import parse_json
from streams.ingest.pipeline import INGEST, Ingest, now

log = logging.getLogger("streams.ingest.slack")

ACTION_IDS = {
    "ack": "ack",
    "silence_1h": "silence-1h",
    "silence_4h": "silence-4h",
    "approve": "approve",
    "reject": "reject",
}
MAX_SKEW_S = 300
ANSWER_WITHIN_S = 2.5
RESPONSE_TIMEOUT_S = 3.0
TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("slack_tasks")


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "v0=" + hmac.new(secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def verify_request(secret: bytes, headers: Mapping[str, str], body: bytes, now_s: float) -> None:
    """Slack's request signing; 401 for a missing/stale timestamp or a missing signature, 403 for a wrong one."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    given = headers.get("X-Slack-Signature") or ""
    if not timestamp or not given:
        raise Unauthorized("missing X-Slack-Request-Timestamp or X-Slack-Signature", scheme="")
    try:
        skew = abs(now_s - int(timestamp))
    except (ValueError, OverflowError):  # 400 digits: an int no float holds
        raise Unauthorized("X-Slack-Request-Timestamp is not epoch seconds", scheme="") from None
    if skew > MAX_SKEW_S:
        raise Unauthorized("X-Slack-Request-Timestamp is more than 5 minutes from now (replayed?)", scheme="")
    if not same_credential(signature(secret, timestamp, body), given.strip().lower()):
        raise Forbidden("X-Slack-Signature does not match the body")


def _payload(body: bytes) -> dict[str, Any]:
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        raw = form["payload"][0]
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise BadRequest("payload", "expected form field payload=<json>") from None
    # ingest's strict reader: 3,000 levels of brackets were a RecursionError (a 500), NaN was taken
    payload = parse_json(raw.encode("utf-8", "surrogatepass"))
    if not isinstance(payload, dict):
        raise BadRequest("payload", "expected a JSON object")
    return payload


def _target(value: Any, default_org: str) -> tuple[str, str, int | None]:
    """(session, org, episode) from a button value: the sink's JSON or a bare session key (no episode: the
    session's current incident). The value is ours (Slack signs the request it comes in)."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            data = json.loads(value)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("session"), str) and data["session"]:
            episode = data.get("episode")
            if episode is not None and (isinstance(episode, bool) or not isinstance(episode, int) or episode < 0):
                raise BadRequest("payload.actions[].value", "episode is not a number")
            return data["session"], str(data.get("org") or default_org), episode
    if isinstance(value, str) and value:
        return value, default_org, None
    raise BadRequest("payload.actions[].value", "the button carries no session")


def actor_of(payload: Mapping[str, Any]) -> str:
    user = payload.get("user")
    if not isinstance(user, dict):
        user = {}
    return str(user.get("username") or user.get("name") or user.get("id") or "slack user")


def updated_message(payload: Mapping[str, Any], note: str) -> dict[str, Any]:
    """The original message without its action buttons, plus a context line ``note``."""
    message = payload.get("message")
    if not isinstance(message, dict):
        message = {}
    line = {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}

    def strip(blocks: Any) -> list[Any]:
        return [b for b in blocks or [] if isinstance(b, dict) and b.get("type") != "actions"]

    out: dict[str, Any] = {"replace_original": True, "text": message.get("text") or note}
    if message.get("attachments"):
        out["attachments"] = [
            {**a, "blocks": strip(a.get("blocks")) + [line]} if isinstance(a, dict) else a
            for a in message["attachments"]
        ]
        out["blocks"] = strip(message.get("blocks"))
    else:
        out["blocks"] = strip(message.get("blocks")) + [line]
    return out


async def post_response(url: str, body: Mapping[str, Any]) -> None:
    """POST to Slack's response_url; failures are logged, never raised (the event is already in)."""
    try:
        timeout = aiohttp.ClientTimeout(total=RESPONSE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, json=body) as answer:
                if answer.status >= 300:
                    log.warning("slack response_url answered %d", answer.status)
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.warning("slack response_url failed: %s", type(exc).__name__)


def _background(app: web.Application, coro: Any) -> asyncio.Task[Any]:
    task: asyncio.Task[Any] = asyncio.ensure_future(coro)
    tasks = app[TASKS]
    tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.warning("slack action in the background failed: %s", t.exception())

    task.add_done_callback(done)
    return task


def register(app: web.Application) -> None:
    """The route, and the set of background tasks (awaited for a moment at shutdown)."""
    tasks: set[asyncio.Task[Any]] = set()
    app[TASKS] = tasks
    app.router.add_post("/ingest/slack/interactivity", post_interactivity, name="slack")

    async def drain(app: web.Application) -> None:
        pending = app[TASKS]
        if pending:
            await asyncio.wait(set(pending), timeout=RESPONSE_TIMEOUT_S)

    app.on_shutdown.append(drain)


async def post_interactivity(request: web.Request) -> web.Response:
    ingest: Ingest = request.app[INGEST]
    secret = ingest.settings.ingest.slack_signing_secret.get_secret_value().encode()
    if not secret:
        raise NotFound("Slack interactivity is not enabled (set OPSLOOP_INGEST_SLACK_SIGNING_SECRET)")
    raw = await ingest.read_body(request, form=True)
    verify_request(secret, request.headers, raw, now() / 1000)
    payload = _payload(raw)
    actions = payload.get("actions") if payload.get("type") == "block_actions" else None
    chosen = next((a for a in actions or [] if isinstance(a, dict) and a.get("action_id") in ACTION_IDS), None)
    if chosen is None:
        ingest.metrics.events.labels("slack", "ignored").inc()
        return web.Response(status=200)
    action = ACTION_IDS[chosen["action_id"]]
    session, org, episode = _target(chosen.get("value"), ingest.config.default_org)
    actor = actor_of(payload)
    unique = str(payload.get("trigger_id") or chosen.get("action_ts") or "")
    if not unique:
        raise BadRequest("payload.trigger_id", "required")
    event = action_event(
        action=action,
        session=session,
        org=org,
        actor=actor,
        unique=f"{unique}:{chosen['action_id']}",
        now=now(),
        via="slack",
        episode=episode,
    )
    ready = ingest.finish(event, principal=action_principal("slack"))
    response_url = payload.get("response_url") if isinstance(payload.get("response_url"), str) else ""

    async def produce_then_update() -> str:
        answer = await ingest.accept([ready], "slack")
        status: str = json.loads(cast(bytes, answer.body))["status"]  # json_response: the body is bytes
        if status == "accepted" and response_url:
            note = f"{DONE[action]} by {actor} (session `{session}`)"
            _background(request.app, post_response(response_url, updated_message(payload, note)))
        return status

    task = _background(request.app, produce_then_update())
    done, _ = await asyncio.wait({task}, timeout=ANSWER_WITHIN_S)
    if not done:  # Kafka is slow: answer Slack now, the produce and the update finish in the background
        return web.Response(status=200)
    task.result()  # a refusal (503 / 429) surfaces as the usual error answer
    return web.Response(status=200)
