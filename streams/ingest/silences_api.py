"""Alertmanager's silence API on ingest, so ``amtool silence add / query / update / expire`` and other Alertmanager clients work.

    POST   /api/v2/silences               a PostableSilence -> {"silenceID": id}     bearer token, control: true
    GET    /api/v2/silences[?filter=..]   the GettableSilences of the token's orgs     bearer token, control: true
    GET    /api/v2/silence/{silenceID}    one of them, or 404                         bearer token, control: true
    DELETE /api/v2/silence/{silenceID}    expire it                                   bearer token, control: true

Each write is turned into the event ``opsloop silence add`` / ``expire`` produces (``silence.created`` /
``silence.expired``, :mod:`streams.model.silences`) and goes through the same checks and produce path as
any post (:meth:`streams.ingest.pipeline.Ingest.finish`): the token needs ``control: true`` in its scope,
a silence of a token without ``operator: true`` covers only its own org, and such a token may expire or
replace only its own org's silences (decide refuses the others). The org is the silence's ``org="..."``
matcher, else ``?org=``, else the token's one org when its scope names exactly one, else the default (as
for any post); an expiry is recorded in the org of the silence it names when the audit store knows it.

The reads come from the audit store (``DATABASE_URL``, filled by ``opsloop projector``), the same answer
as the read API's ``GET /api/v1/silences`` and ``opsloop silence list``, limited to the orgs of the token's
scope. So a silence just added is listed once the projector has stored its event (about a second), and
ingest answers 503 when no store is reachable. Where it differs from Alertmanager: an expiry of an id the
store does not know is recorded and changes nothing (not a 404), and a post with an ``id`` creates or
replaces that silence (Alertmanager updates it; ``amtool silence update`` works either way). ``GET
/api/v2/status`` is a 404, which amtool tolerates (answered, amtool warns on every command that the
versions differ).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from streams.ingest.audit_reads import (
    AUDIT_READS,
    StoreUnavailable,
    filter_matchers,
    iso_ms,
    ms_of_iso,
    read_scope,
    readable_orgs,
)
from streams.ingest.errors import BadRequest, Forbidden, NotFound
from streams.ingest.fields import MAX_LABEL_VALUE, array, index, obj, parse_json
from streams.ingest.pipeline import INGEST
from streams.ingest.scopes import Scope
from streams.model.matchers import Matcher, MatcherError, make_matcher, parse_matcher
from streams.model.records import CONTROL_CHARS, derived_id
from streams.model.silences import Silence, SilenceError, expire_event, parse_time_ms, silence_event, silence_from_json

log = logging.getLogger("streams.ingest")

MAX_MATCHERS = 64
MAX_TEXT = 1024  # createdBy, comment
STATE_ORDER = {"active": 0, "pending": 1, "expired": 2}


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


def org_of_silence(silence: Silence, fallback: str) -> str:
    """The silence's ``org="..."`` matcher, else ``fallback``: the post's org (``?org=``, else the token's one
    org, else the default: :meth:`streams.ingest.pipeline.Ingest.org`), as for any other post."""
    named = next((m.value for m in silence.matchers if m.name == "org" and m.op == "="), None)
    return named or fallback


def am_matcher_json(m: Matcher) -> dict[str, Any]:
    return {"name": m.name, "value": m.value, "isRegex": m.op in ("=~", "!~"), "isEqual": m.op in ("=", "=~")}


def gettable(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored silence (:func:`streams.audit.queries.list_silences`) as Alertmanager's GettableSilence."""
    ends = stored["ends_at"] if stored["expired_at"] is None else min(stored["ends_at"], stored["expired_at"])
    return {
        "id": stored["id"],
        "status": {"state": stored["state"]},
        "updatedAt": iso_ms(stored["updated_at"]),
        "matchers": [am_matcher_json(parse_matcher(m)) for m in stored["matchers"]],
        "startsAt": iso_ms(min(stored["starts_at"], ends)),
        "endsAt": iso_ms(ends),
        "createdBy": stored["created_by"],
        "comment": stored["comment"],
    }


def matches_filter(stored: dict[str, Any], filters: list[Matcher]) -> bool:
    """Alertmanager's ``?filter=`` on silences (``CheckSilenceMatchesFilterLabels``): each filter matcher
    holds on the silence's matchers read as labels (a matcher's name -> its value); one with an empty value
    also holds when the silence has no matcher of that name (``!=""``: when it has one)."""
    values = {m.name: m.value for m in map(parse_matcher, stored["matchers"])}
    for f in filters:
        present = f.name in values
        if f.value == "" and (present if f.op in ("!=", "!~") else not present):
            continue
        if not f.matches(values):
            return False
    return True


def alertmanager_order(silence: dict[str, Any]) -> tuple[int, int]:
    """Alertmanager's ``SortSilences``: active by end, pending by start, expired by end, newest first."""
    state = silence["status"]["state"]
    key = silence["startsAt"] if state == "pending" else silence["endsAt"]
    ms = ms_of_iso(key)
    return STATE_ORDER.get(state, 3), -ms if state == "expired" else ms


async def get_silences(request: web.Request) -> web.Response:
    scope = read_scope(request, "silences")
    filters = filter_matchers(request)
    stored = await request.app[AUDIT_READS].silences(readable_orgs(scope))
    found = [gettable(s) for s in stored if matches_filter(s, filters)]
    return web.json_response(sorted(found, key=alertmanager_order))


async def get_silence(request: web.Request) -> web.Response:
    scope = read_scope(request, "silences")
    silence_id = request.match_info["silence_id"]
    check_silence_id(silence_id, "silenceID")
    for s in await request.app[AUDIT_READS].silences(readable_orgs(scope)):
        if s["id"] == silence_id:
            return web.json_response(gettable(s))
    raise NotFound(f"no silence {silence_id!r} in the audit store for this token's orgs")


async def post_silence(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    principal = ingest.authenticate(request)
    now_ms = int(time.time() * 1000)
    body = parse_json(await ingest.read_body(request))
    silence = silence_of(body, now_ms)
    if isinstance(body, dict) and body.get("id") and principal.scope.control:
        # an update of another org's silence: 404, as for its expiry (it was 200, and decide refused it unseen)
        await stored_org(request, principal.scope, silence.silence_id)
    org = org_of_silence(silence, ingest.org(request, principal))
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
    # the store is asked only for a token that may expire at all (finish refuses the others), so a 404 tells
    # a token without control nothing about other orgs' silences
    known = await stored_org(request, principal.scope, silence_id) if principal.scope.control else None
    org = known or ingest.org(request, principal)
    event = expire_event(silence_id, org=org, now_ms=now_ms, actor=principal.name)
    event["received_at"] = now_ms
    await ingest.take([ingest.finish(event, principal=principal)], "silences")
    return web.Response(status=200)


async def stored_org(request: web.Request, scope: Scope, silence_id: str) -> str | None:
    """The org of the silence the audit store knows by this id, when the token may act for it; 404 when it
    is another org's (not disclosed); None when the store does not know it or cannot be read (the expiry is
    then recorded in the token's org, and decide ends only a silence of that org)."""
    try:
        stored = await request.app[AUDIT_READS].silences(None)
    except StoreUnavailable as exc:
        log.info("silence %s: expiry recorded without the audit store (%s)", silence_id, exc.reason)
        return None
    org = next((s["org"] for s in stored if s["id"] == silence_id), None)
    if org is not None and not scope.allows_org(org):
        readable = readable_orgs(scope)
        if readable is not None and any(
            s["id"] == silence_id for s in await request.app[AUDIT_READS].silences(readable)
        ):
            # listed to it (an operator's silence that mutes its orgs' alerts), not its to change
            raise Forbidden(f"silence {silence_id!r} is org {org!r}'s; this token may change only its orgs' silences")
        raise NotFound(f"no silence {silence_id!r} in the audit store for this token's orgs")
    return org


# Routes whose refusals ingest's error middleware answers as Alertmanager does: the reason as a JSON string
# (its API's error body, which amtool prints), not ingest's {"error": ...}.
WRITE_ROUTES = ("silences", "silence")  # a refusal of these is a rejected event (opsloop_events_rejected_total)
ROUTES = (*WRITE_ROUTES, "silences-list", "silence-get")


def register(app: web.Application) -> None:
    """The routes; the reads use ``app[AUDIT_READS]``."""
    app.router.add_post("/api/v2/silences", post_silence, name="silences")
    app.router.add_get("/api/v2/silences", get_silences, name="silences-list")
    app.router.add_get("/api/v2/silence/{silence_id}", get_silence, name="silence-get")
    app.router.add_delete("/api/v2/silence/{silence_id}", delete_silence, name="silence")
