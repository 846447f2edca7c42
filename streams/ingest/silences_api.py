"""Alertmanager's silence API on ingest, so ``amtool silence add / expire`` and other Alertmanager clients work.

    POST   /api/v2/silences               a PostableSilence -> {"silenceID": id}     bearer token, control: true
    DELETE /api/v2/silence/{silenceID}    expire it                                   bearer token, control: true

Each is turned into the event ``opsloop silence add`` / ``expire`` produces (``silence.created`` /
``silence.expired``, :mod:`streams.model.silences`) and goes through the same checks and produce path as
any post (:meth:`streams.ingest.pipeline.Ingest.finish`): the token needs ``control: true`` in its scope,
a silence of a token without ``operator: true`` covers only its own org, and such a token may expire or
replace only its own org's silences (decide refuses the others). The org is the silence's ``org="..."``
matcher, else the token's one org when its scope names exactly one, else ``?org=`` or the default.

Where it differs from Alertmanager: ingest has no store to read, so an unknown id is not a 404; an
expiry of one is recorded and changes nothing, and a post with an ``id`` creates or replaces that silence
(Alertmanager updates it). Listing (``amtool silence query``) is the read API's ``GET /api/v1/silences``
and ``opsloop silence list``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from streams.ingest.errors import BadRequest
from streams.ingest.fields import MAX_LABEL_VALUE, array, index, obj, parse_json
from streams.ingest.pipeline import INGEST
from streams.ingest.scopes import Scope
from streams.model.matchers import MatcherError, make_matcher
from streams.model.records import CONTROL_CHARS, derived_id
from streams.model.silences import Silence, SilenceError, expire_event, parse_time_ms, silence_event, silence_from_json

MAX_MATCHERS = 64
MAX_TEXT = 1024  # createdBy, comment


def am_matcher(raw: Any, path: str) -> str:
    """``{"name", "value", "isRegex", "isEqual"}`` (Alertmanager's Matcher) as opsloop's ``name=~"value"``."""
    m = obj(raw, path)
    name, value = m.get("name"), m.get("value")
    is_regex, is_equal = m.get("isRegex", False), m.get("isEqual", True)
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{path}.name", "required, a label name")
    if not isinstance(value, str):
        raise BadRequest(f"{path}.value", "required, a string")
    if len(value) > MAX_LABEL_VALUE:
        raise BadRequest(f"{path}.value", f"{len(value)} characters; at most {MAX_LABEL_VALUE}, as a label value")
    for key, flag in (("isRegex", is_regex), ("isEqual", is_equal)):
        if not isinstance(flag, bool):
            raise BadRequest(f"{path}.{key}", "expected true or false")
    op = ("=~" if is_regex else "=") if is_equal else ("!~" if is_regex else "!=")
    try:
        return str(make_matcher(name, op, value))
    except MatcherError as exc:
        raise BadRequest(path, str(exc)) from None


def check_silence_id(value: Any, path: str) -> None:
    """1-128 printable characters (the id is a key in the silences table and a column in the audit store)."""
    if not isinstance(value, str) or not 0 < len(value) <= 128 or CONTROL_CHARS.search(value):
        raise BadRequest(path, "a silence id: 1-128 characters, no control characters")


def _time(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(key, "required, an RFC 3339 time like 2026-01-04T22:00:00Z")
    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise BadRequest(key, str(exc)) from None


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise BadRequest(key, "expected a string")
    if len(value) > MAX_TEXT:
        raise BadRequest(key, f"{len(value)} characters; at most {MAX_TEXT}")
    return value


def silence_of(body: Any, now_ms: int) -> Silence:
    """A PostableSilence as a :class:`Silence`; 400 naming the field. As Alertmanager: a start in the past
    is now, and the end must be after it and not in the past."""
    body = obj(body, "body")
    raw = array(body.get("matchers"), "matchers")
    if not raw:
        raise BadRequest("matchers", "required, at least one")
    if len(raw) > MAX_MATCHERS:
        raise BadRequest("matchers", f"{len(raw)} matchers; at most {MAX_MATCHERS}")
    matchers = [am_matcher(m, index("matchers", i)) for i, m in enumerate(raw)]
    starts, ends = max(_time(body, "startsAt"), now_ms), _time(body, "endsAt")
    if ends <= now_ms:
        raise BadRequest("endsAt", "in the past")
    silence_id = body.get("id")
    if silence_id is not None:
        check_silence_id(silence_id, "id")
    data = {
        "matchers": matchers,
        "starts_at": starts,
        "ends_at": ends,
        "created_by": _text(body, "createdBy"),
        "comment": _text(body, "comment"),
        **({"id": silence_id} if silence_id else {}),
    }
    try:
        return silence_from_json(data)
    except SilenceError as exc:
        raise BadRequest("silence", str(exc)) from None


def org_of_silence(silence: Silence, scope: Scope, fallback: str) -> str:
    """The silence's ``org="..."`` matcher, else the token's one org, else ``fallback`` (``?org=`` or the default)."""
    named = next((m.value for m in silence.matchers if m.name == "org" and m.op == "="), None)
    return named or scope.sole_org or fallback


async def post_silence(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    principal = ingest.authenticate(request)
    now_ms = int(time.time() * 1000)
    silence = silence_of(parse_json(await ingest.read_body(request)), now_ms)
    org = org_of_silence(silence, principal.scope, ingest.org(request))
    event = silence_event(silence, org=org, now_ms=now_ms, actor=silence.created_by or principal.name)
    # One event per content: a post naming an existing id with a new end (amtool silence update) is a new
    # event, not a duplicate of the first; the same post again is one.
    event["event_id"] = derived_id("silence-api", org, event["payload"]["body_json"])
    event["received_at"] = now_ms
    await ingest.take([ingest.finish(event, principal=principal)], "silences")
    return web.json_response({"silenceID": silence.silence_id})


async def delete_silence(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    principal = ingest.authenticate(request)
    silence_id = request.match_info["silence_id"]
    check_silence_id(silence_id, "silenceID")
    now_ms = int(time.time() * 1000)
    org = principal.scope.sole_org or ingest.org(request)
    event = expire_event(silence_id, org=org, now_ms=now_ms, actor=principal.name)
    event["received_at"] = now_ms
    await ingest.take([ingest.finish(event, principal=principal)], "silences")
    return web.Response(status=200)


# Routes whose refusals ingest's error middleware answers as Alertmanager does: the reason as a JSON string
# (its API's error body, which amtool prints), not ingest's {"error": ...}.
ROUTES = ("silences", "silence")


def register(app: web.Application) -> None:
    app.router.add_post("/api/v2/silences", post_silence, name="silences")
    app.router.add_delete("/api/v2/silence/{silence_id}", delete_silence, name="silence")
