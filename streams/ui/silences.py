"""The silences page: silences active, pending and expired; a new one, previewed before it is created.

Preview answers what Alertmanager's UI shows before a silence is saved: the firing
incidents its matchers would mute, found by the incidents list's own query
(:func:`streams.audit.queries.list_incidents`, matchers over labels plus the columns).
Create produces the ``silence.created`` event ``opsloop silence add`` produces; decide
keeps the silence and the projector folds it back into this page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from streams.api.auth import AuthError, Reader
from streams.audit import queries
from streams.audit.queries import IncidentQuery, QueryError
from streams.model.records import check_org_name
from streams.model.silences import (
    Silence,
    SilenceError,
    expire_event,
    scoped_to_org,
    silence_event,
    silence_from_json,
)
from streams.model.yamlfile import parse_duration_ms
from streams.ui.base import OPTIONS, READER, SEND, SESSION, csrf_field, db, esc, form_text, org_field, page, when
from streams.ui.incidents import incident_table

log = logging.getLogger("streams.ui")

STATES = ("active", "pending", "expired")
PREVIEW_STATUSES = "firing,acknowledged"  # alerts still firing, whether or not someone acknowledged them
PREVIEW_LIMIT = 100


def _form(request: web.Request, values: Mapping[str, str]) -> str:
    return (
        f'<form method="post" action="/silences" id="new-silence">{csrf_field(request)}'
        '<label>Matchers <input type="text" name="matchers" '
        f'value="{esc(values.get("matchers", ""))}" placeholder=\'service="db-main",severity="urgent"\'></label>'
        f'<label>Duration <input type="text" name="duration" value="{esc(values.get("duration") or "2h")}" size="6">'
        f"</label><label>Org {org_field(request, values.get('org', ''))}</label>"
        f'<label>Comment <input type="text" name="comment" value="{esc(values.get("comment", ""))}"></label>'
        '<button type="submit" name="action" value="preview" id="preview">Preview</button> '
        '<button type="submit" name="action" value="create" id="create">Create silence</button></form>'
    )


async def silences(
    request: web.Request,
    *,
    error: str = "",
    status: int = 200,
    values: Mapping[str, str] | None = None,
    preview: str = "",
) -> web.Response:
    reader: Reader = request[READER]
    state = request.query.get("state") or None
    if state not in (None, *STATES):
        raise QueryError(f"state: {state!r} is not one of {', '.join(STATES)}")
    now = int(time.time() * 1000)
    found = await db(request, queries.list_silences, now, orgs=reader.orgs, state=state)
    rows = "".join(
        f'<tr class="silence state-{esc(s["state"])}"><td>{esc(s["id"])}</td><td>{esc(s["state"])}</td><td>{esc(s["org"])}</td>'
        f"<td><code>{esc(', '.join(s.get('matchers') or []))}</code></td><td>{esc(when(s['starts_at']))}</td>"
        f"<td>{esc(when(s['ends_at']))}</td><td>{esc(s.get('created_by'))}</td><td>{esc(s.get('comment'))}</td>"
        f"<td>{_expire_button(request, s)}</td></tr>"
        for s in found
    )
    states = " · ".join(f'<a href="/silences?state={s}">{s}</a>' for s in STATES)
    message = f'<p class="error">{esc(error)}</p>' if error else ""
    if request.query.get("created"):
        message += f'<p class="notice" id="created">Silence <code>{esc(request.query["created"])}</code> sent.</p>'
    if request.query.get("expired"):
        message += f'<p class="notice" id="expired">Expiry of <code>{esc(request.query["expired"])}</code> sent.</p>'
    if values is None:  # a link (an incident's "Silence with these labels") may fill the form in
        values = {name: request.query.get(name, "") for name in ("matchers", "duration", "org", "comment")}
    body = (
        f'{message}<p><a href="/silences">all</a> · {states}</p>'
        '<table id="silences"><thead><tr><th>id</th><th>state</th><th>org</th><th>matchers</th><th>starts</th>'
        f"<th>ends</th><th>by</th><th>comment</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        f"<h2>New silence</h2>{preview}{_form(request, values or {})}"
    )
    return page(request, "Silences", body, status=status)


async def silences_page(request: web.Request) -> web.Response:
    return await silences(request)


def _expire_button(request: web.Request, silence: Mapping[str, Any]) -> str:
    if silence["state"] == "expired":
        return ""
    return (
        f'<form method="post" action="/silences/{esc(quote(str(silence["id"]), safe=""))}/expire">'
        f'{csrf_field(request)}<button type="submit" class="expire">Expire</button></form>'
    )


async def expire_silence(request: web.Request) -> web.StreamResponse:
    """Produce the ``silence.expired`` event ``opsloop silence expire`` produces, for a silence the login may see."""
    reader: Reader = request[READER]
    silence_id = request.match_info["silence_id"]
    now = int(time.time() * 1000)
    known = [s for s in await db(request, queries.list_silences, now) if s["id"] == silence_id]
    if not known:
        raise web.HTTPNotFound(reason=f"no silence {silence_id!r}")
    org = str(known[0]["org"])
    try:
        reader.require_org(org)
    except AuthError as exc:
        return await silences(request, error=exc.reason, status=exc.status)
    if known[0]["state"] == "expired":
        return await silences(request, error=f"silence {silence_id} has already expired", status=409)
    user = request[SESSION].user
    await request.app[SEND](expire_event(silence_id, org=org, now_ms=now, actor=user))
    log.info("silence %s (org %s) expired by %s", silence_id, org, user)
    raise web.HTTPSeeOther("/silences?" + urlencode({"expired": silence_id}))


def _silence(form: Mapping[str, Any], user: str, now: int, *, org: str | None) -> tuple[Silence, list[str]]:
    """The silence the form describes, held to ``org`` when given (SilenceError / QueryError /
    ValueError name what is wrong)."""
    matchers = [str(m) for m in queries.parse_filter(form_text(form, "matchers"))]
    if not matchers:
        raise SilenceError('matchers: give at least one, e.g. service="db-main"')
    if org is not None:
        matchers = scoped_to_org(matchers, org)
    silence = silence_from_json(
        {
            "matchers": matchers,
            "starts_at": now,
            "ends_at": now + parse_duration_ms(form_text(form, "duration") or "2h"),
            "created_by": user,
            "comment": form_text(form, "comment"),
        }
    )
    return silence, matchers


async def _preview(request: web.Request, matchers: list[str]) -> str:
    """The firing incidents these matchers select now (those the reader may see), as the incidents list shows them."""
    q = IncidentQuery.parse(filter=matchers, status=PREVIEW_STATUSES, limit=PREVIEW_LIMIT, orgs=request[READER].orgs)
    found = await db(request, queries.list_incidents, q)
    more = f" (the first {PREVIEW_LIMIT})" if found.next_cursor else ""
    return (
        f'<div id="silence-preview"><p class="notice">{len(found.items)} firing incident(s){more} would be muted '
        f"by <code>{esc(', '.join(matchers))}</code>; nothing is created until you press Create silence.</p>"
        f"{incident_table(found.items, table_id='preview')}</div>"
    )


async def create_silence(request: web.Request) -> web.StreamResponse:
    reader: Reader = request[READER]
    user = request[SESSION].user
    form = await request.post()
    values = {name: form_text(form, name) for name in ("matchers", "duration", "org", "comment")}
    org = values["org"] or request.app[OPTIONS]["default_org"]
    now = int(time.time() * 1000)
    try:
        reader.require_org(org)
        check_org_name(org)
        # A name limited to some orgs silences its own org only; an unlimited name's silence applies as written.
        silence, matchers = _silence(form, user, now, org=org if reader.orgs is not None else None)
        if form_text(form, "action") == "preview":
            return await silences(request, values=values, preview=await _preview(request, matchers))
    except AuthError as exc:
        return await silences(request, error=exc.reason, status=exc.status, values=values)
    except (SilenceError, QueryError, ValueError) as exc:
        return await silences(request, error=str(exc), status=400, values=values)
    event = silence_event(silence, org=org, now_ms=now, actor=user)
    await request.app[SEND](event)
    log.info("silence %s (org %s, %s) by %s", silence.silence_id, org, ", ".join(matchers), user)
    raise web.HTTPSeeOther("/silences?" + urlencode({"created": silence.silence_id}))
