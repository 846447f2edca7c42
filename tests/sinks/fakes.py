"""Local stand-ins for Slack, Teams, PagerDuty, a signed webhook receiver and an action endpoint.

One real aiohttp server in a background thread (so both in-process tests and
worker subprocesses can reach it). Each endpoint validates the payload the way the
service documents it and answers as the service does: Slack ``ok``, Teams 202,
PagerDuty 202 ``{"status": "success"}`` or 400 with the errors; a failing
validation is recorded and answered 400 with the reason. A test can script
answers per endpoint: a status with headers and body (429 + Retry-After, 500, a
200 carrying an error), a hang, or an accept-then-drop (the request is read, the connection closed).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agents.sinks.channels.webhook import SIGNATURE_HEADER, verify

PD_SEVERITIES = {"critical", "error", "warning", "info"}
PD_ACTIONS = {"trigger", "acknowledge", "resolve"}
TEAMS_CARD = "application/vnd.microsoft.card.adaptive"


# -- validators (pure: payload in, list of problems out) ---------------------------


def validate_slack(payload: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(payload, dict):
        return ["payload is not a JSON object"]
    if not isinstance(payload.get("text"), str) or not payload["text"].strip():
        errors.append("text: a top-level fallback text is required")
    blocks = list(payload.get("blocks") or [])
    for attachment in payload.get("attachments") or []:
        blocks.extend(attachment.get("blocks") or [])
        if "color" in attachment and not str(attachment["color"]).startswith("#"):
            errors.append("attachments.color: expected a hex colour")
    if not blocks:
        errors.append("blocks: none")
    if len(blocks) > 50:
        errors.append(f"blocks: {len(blocks)} > 50")
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text":
                errors.append(f"blocks[{i}].header: text must be plain_text")
            if len(text.get("text", "")) > 150:
                errors.append(f"blocks[{i}].header: {len(text['text'])} > 150 characters")
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"blocks[{i}].section: needs text or fields")
            if "text" in block and len(block["text"].get("text", "")) > 3000:
                errors.append(f"blocks[{i}].section.text: {len(block['text']['text'])} > 3000 characters")
            fields = block.get("fields") or []
            if len(fields) > 10:
                errors.append(f"blocks[{i}].section.fields: {len(fields)} > 10")
            for j, f in enumerate(fields):
                if len(f.get("text", "")) > 2000:
                    errors.append(f"blocks[{i}].section.fields[{j}]: {len(f['text'])} > 2000 characters")
        elif kind == "context":
            if not 0 < len(block.get("elements") or []) <= 10:
                errors.append(f"blocks[{i}].context: 1..10 elements")
        elif kind == "actions":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= 25:
                errors.append(f"blocks[{i}].actions: 1..25 elements")
            for j, el in enumerate(elements):
                if el.get("type") != "button":
                    continue
                if len(el.get("text", {}).get("text", "")) > 75:
                    errors.append(f"blocks[{i}].actions[{j}]: button text > 75")
                if len(el.get("url", "")) > 3000:
                    errors.append(f"blocks[{i}].actions[{j}]: url > 3000")
                if el.get("action_id") in action_ids:
                    errors.append(f"blocks[{i}].actions[{j}]: duplicate action_id")
                action_ids.add(el.get("action_id"))
        else:
            errors.append(f"blocks[{i}]: unexpected block type {kind!r}")
    return errors


def _walk_card(node: Any, errors: list[str], path: str = "card") -> None:
    if isinstance(node, dict):
        if node.get("type") == "Action.Submit":
            errors.append(f"{path}: Action.Submit is not supported in webhooks")
        for k, v in node.items():
            _walk_card(v, errors, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk_card(v, errors, f"{path}[{i}]")


def validate_teams(payload: Any, size: int) -> list[str]:
    errors: list[str] = []
    if size > 28 * 1024:
        errors.append(f"message is {size} bytes > 28 KB")
    if not isinstance(payload, dict) or payload.get("type") != "message":
        return errors + ["type: expected 'message'"]
    attachments = payload.get("attachments") or []
    if not attachments:
        return errors + ["attachments: none"]
    first = attachments[0]
    if first.get("contentType") != TEAMS_CARD:
        errors.append(f"attachments[0].contentType: {first.get('contentType')!r}")
    card = first.get("content") or {}
    if card.get("type") != "AdaptiveCard":
        errors.append("content.type: expected AdaptiveCard")
    try:
        version = tuple(int(p) for p in str(card.get("version", "")).split("."))
    except ValueError:
        version = (99,)
    if not version or version > (1, 4):
        errors.append(f"content.version {card.get('version')!r}: must be ≤ 1.4")
    if not card.get("body"):
        errors.append("content.body: empty")
    _walk_card(card, errors)
    return errors


def validate_pagerduty(payload: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(payload, dict):
        return ["Event object is invalid"]
    key = payload.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("'routing_key' must be 32 characters")
    action = payload.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge or resolve)")
    dedup = payload.get("dedup_key")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action == "trigger":
        p = payload.get("payload")
        if not isinstance(p, dict):
            errors.append("'payload' is missing or not an object")
        else:
            if not isinstance(p.get("summary"), str) or not p["summary"] or len(p["summary"]) > 1024:
                errors.append("'payload.summary' is required and at most 1024 characters")
            if not isinstance(p.get("source"), str) or not p["source"]:
                errors.append("'payload.source' is required")
            if p.get("severity") not in PD_SEVERITIES:
                errors.append("'payload.severity' must be one of critical, error, warning or info")
            if "custom_details" in p and not isinstance(p["custom_details"], dict):
                errors.append("'payload.custom_details' must be an object")
        for link in payload.get("links") or []:
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                errors.append("'links' entries need href")
    return errors


def validate_action(request: web.Request, payload: Any, token: str | None) -> list[str]:
    """What an action endpoint checks: its token, an idempotency key, and the call itself."""
    errors = []
    if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
        errors.append("bad or missing bearer token")
    if not request.headers.get("Idempotency-Key"):
        errors.append("Idempotency-Key header missing")
    if request.method in ("GET", "DELETE"):
        if not request.query.get("action"):
            errors.append("action query parameter missing")
        return errors
    if request.headers.get("content-type", "").split(";")[0] != "application/json":
        return [*errors, "content-type must be application/json"]
    if not isinstance(payload, dict):
        return [*errors, "body must be a JSON object"]
    for key in ("action", "params", "effect_id", "session_key"):
        if key not in payload:
            errors.append(f"{key} missing")
    if payload.get("action") != request.headers.get("X-Opsloop-Action"):
        errors.append("X-Opsloop-Action does not match the body's action")
    return errors


# -- the server ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # sleep this long before answering (longer than the client's timeout: a hang)
    drop: bool = False  # accept the request, then close the connection without an answer


@dataclass
class Received:
    kind: str
    name: str
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    body: bytes
    json: Any
    errors: list[str]
    answered: int = 0


class FakeServices:
    def __init__(
        self, webhook_keys: Mapping[str, str] | None = None, action_tokens: Mapping[str, str] | None = None
    ) -> None:
        self.webhook_keys = dict(webhook_keys or {})
        self.action_tokens = dict(action_tokens or {})  # /actions/<name>: the bearer token it requires
        self.requests: list[Received] = []
        self._scripts: dict[tuple[str, str], deque[Answer]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.capacity: tuple[int, float] | None = None  # (requests at once, seconds each): see shed_past
        self.in_flight = 0
        self.peak_in_flight = 0

    # scripting
    def shed_past(self, limit: int | None, delay_s: float = 0.0) -> None:
        """Serve at most ``limit`` requests at once, each answered after ``delay_s``, and answer 503 at once past
        that (a receiver that sheds load; unscripted answers only). None: back to unlimited."""
        with self._lock:
            self.capacity = None if limit is None else (limit, delay_s)
            self.peak_in_flight = 0

    def script(self, kind: str, name: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts.setdefault((kind, name), deque()).extend(answers)

    def unscript(self, kind: str, name: str) -> int:
        """Drop the scripted answers no request reached yet (so they cannot leak into a later run); how many."""
        with self._lock:
            return len(self._scripts.pop((kind, name), ()))

    def got(self, kind: str | None = None, name: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if (kind is None or r.kind == kind) and (name is None or r.name == name)]

    def url(self, kind: str, name: str) -> str:
        if kind == "pagerduty":
            return f"http://127.0.0.1:{self.port}/pagerduty/{name}/v2/enqueue"
        return f"http://127.0.0.1:{self.port}/{kind}/{name}"

    # lifecycle
    def start(self) -> FakeServices:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._stopping = asyncio.Event()
            app = web.Application(client_max_size=4 * 1024 * 1024)
            app.router.add_post("/pagerduty/{name}/v2/enqueue", self._handle("pagerduty"))
            for kind in ("slack", "teams", "hook"):
                app.router.add_post(f"/{kind}/{{name}}", self._handle(kind))
            app.router.add_route("*", "/actions/{name}", self._handle("actions"))  # a remediation endpoint
            self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-services", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake services did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            try:  # end the hangs, close connections, then stop the loop
                self._loop.call_soon_threadsafe(self._stopping.set)
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # handlers
    def _handle(self, kind: str):
        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            name = request.match_info["name"]
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            errors = self._validate(kind, name, payload, body, request)
            received = Received(kind, name, time.monotonic(), dict(request.headers), body, payload, errors)
            with self._lock:
                self.requests.append(received)
                script = self._scripts.get((kind, name))
                answer = script.popleft() if script else None
            if errors:
                received.answered = 400
                if kind == "pagerduty":
                    return web.json_response(
                        {"status": "invalid event", "message": "Event object is invalid", "errors": errors}, status=400
                    )
                return web.Response(status=400, text="invalid_payload: " + "; ".join(errors))
            if answer is None and self.capacity is not None:
                limit, delay_s = self.capacity
                if self.in_flight >= limit:
                    received.answered = 503
                    return web.Response(status=503, text="over capacity")
                self.in_flight += 1  # the server's loop is the only writer
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    await asyncio.sleep(delay_s)
                finally:
                    self.in_flight -= 1
            if answer is None:
                answer = self._default(kind, payload)
            if answer.drop:
                received.answered = -1
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=200)  # never reaches the client: the connection is gone
            if answer.hang_s:
                try:
                    await asyncio.wait_for(self._stopping.wait(), answer.hang_s)
                except TimeoutError:
                    pass
            received.answered = answer.status
            return web.Response(status=answer.status, text=answer.body, headers=dict(answer.headers))

        return handler

    def _validate(self, kind: str, name: str, payload: Any, body: bytes, request: web.Request) -> list[str]:
        if kind == "actions":
            return validate_action(request, payload, self.action_tokens.get(name))
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return ["content-type must be application/json"]
        if kind == "slack":
            return validate_slack(payload)
        if kind == "teams":
            return validate_teams(payload, len(body))
        if kind == "pagerduty":
            return validate_pagerduty(payload)
        key = self.webhook_keys.get(name)
        if key is None:
            return [f"no signing key configured for {name}"]
        if not verify(key, body, request.headers.get(SIGNATURE_HEADER, "")):
            return ["signature mismatch"]
        errors = []
        for header in ("X-Event-Type", "X-Severity", "Idempotency-Key"):
            if not request.headers.get(header):
                errors.append(f"{header} header missing")
        return errors

    @staticmethod
    def _default(kind: str, payload: Any) -> Answer:
        if kind == "slack":
            return Answer(200, "ok")
        if kind == "teams":
            return Answer(202, "")
        if kind == "pagerduty":
            return Answer(
                202,
                json.dumps({"status": "success", "message": "Event processed", "dedup_key": payload.get("dedup_key")}),
                {"content-type": "application/json"},
            )
        return Answer(200, "")
