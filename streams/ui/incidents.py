"""The incidents pages: the list (matchers, status, sort, pages), one incident with its timeline and the
message links' actions as buttons (Acknowledge, Approve, Reject, Silence 1 h / 4 h).

The list and the silence preview render rows with the same :func:`incident_table`, over
the same query function the read API answers with (:func:`streams.audit.queries.list_incidents`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from streams.audit import queries
from streams.audit.incidents import STATUSES, common_labels
from streams.audit.queries import IncidentQuery, QueryError
from streams.core.acklinks import ACTION_LABELS, ACTIONS
from streams.core.actions import action_event
from streams.model.linkepisode import parse_episode
from streams.model.matchers import is_label_name, make_matcher
from streams.ui.base import (
    LIST_LABELS,
    OPTIONS,
    READER,
    SEND,
    SESSION,
    csrf_field,
    db,
    esc,
    incident_url,
    labels_html,
    page,
    when,
)

log = logging.getLogger("streams.ui")

SORTABLE = {"session_key": "session", "last_seen": "last seen", "first_seen": "first seen"}


def _link(params: Mapping[str, str], **changes: str | None) -> str:
    merged = {**params, **changes}
    return "/?" + urlencode({k: v for k, v in merged.items() if v})


def incident_row(item: Mapping[str, Any]) -> str:
    return (
        f'<tr class="incident"><td><a href="{esc(incident_url(item["session_key"]))}">{esc(item["session_key"])}</a></td>'
        f"<td>{esc(when(item.get('last_seen')))}</td><td>{esc(when(item.get('first_seen')))}</td>"
        f'<td class="status-{esc(item.get("status"))}">{esc(item.get("status"))}</td>'
        f"<td>{esc(item.get('severity'))}</td><td>{esc(item.get('category'))}</td><td>{esc(item.get('org'))}</td>"
        f'<td class="labels">{labels_html(item.get("labels"), limit=LIST_LABELS)}</td><td>{esc(item.get("acked_by"))}</td></tr>'
    )


def incident_table(items: Iterable[Mapping[str, Any]], heads: Iterable[str] = (), table_id: str = "incidents") -> str:
    """Incident rows under their column heads (``heads``: the three sortable ones, links on the list page)."""
    first = "".join(heads) or "".join(f"<th>{esc(label)}</th>" for label in SORTABLE.values())
    rows = "".join(incident_row(item) for item in items)
    table = (
        f'<table id="{esc(table_id)}"><thead><tr>{first}<th>status</th><th>severity</th><th>category</th>'
        f"<th>org</th><th>labels</th><th>acknowledged by</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return table if rows else table + "<p>No incidents match.</p>"


async def incidents(request: web.Request) -> web.Response:
    query = request.query
    filter_text = query.get("filter", "")
    status = query.get("status", "firing")
    sort = query.get("sort", "-last_seen")
    params = {"filter": filter_text, "status": status, "sort": sort}
    status_options = "".join(
        f'<option value="{s}"{" selected" if s == status else ""}>{s or "any"}</option>' for s in ("", *STATUSES)
    )
    form = (
        '<form method="get" action="/"><label>Filter (Alertmanager matchers) '
        f'<input type="text" name="filter" value="{esc(filter_text)}" placeholder=\'service=~"db.*",severity="urgent"\'>'
        f'</label><label>Status <select name="status">{status_options}</select></label>'
        f'<input type="hidden" name="sort" value="{esc(sort)}"><button type="submit">Apply</button></form>'
    )
    try:
        q = IncidentQuery.parse(
            filter=filter_text,
            status=status or None,
            sort=sort,
            limit=query.get("limit"),
            cursor=query.get("cursor"),
            orgs=request[READER].orgs,
        )
    except QueryError as exc:
        return page(request, "Incidents", f'{form}<p class="error">{esc(exc)}</p>', status=400)
    result = await db(request, queries.list_incidents, q)
    heads = []
    for key, label in SORTABLE.items():
        current = sort.lstrip("-+")
        if current == key:  # the sorted column: the other direction
            flip = key if sort.startswith("-") else f"-{key}"
        else:  # times newest first, sessions A to Z
            flip = f"-{key}" if key.endswith("_seen") else key
        arrow = (" ▼" if sort.startswith("-") else " ▲") if current == key else ""
        heads.append(f'<th><a href="{esc(_link(params, sort=flip, cursor=None))}">{esc(label)}{arrow}</a></th>')
    table = incident_table(result.items, heads)
    pager = []
    if query.get("cursor"):
        pager.append(f'<a href="{esc(_link(params, cursor=None))}">First page</a>')
    if result.next_cursor:
        pager.append(f'<a href="{esc(_link(params, cursor=result.next_cursor))}" rel="next">Next page</a>')
    refresh = request.app[OPTIONS]["refresh_s"]
    body = f"{form}{table}<p>{' · '.join(pager)}</p><p><small>Refreshes every {refresh} s.</small></p>"
    return page(request, "Incidents", body, refresh_s=refresh)


async def _load_incident(request: web.Request, key: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
    request[READER].require_session_org(key)
    view = await db(request, queries.incident_view, key)
    if view.org is None:
        raise web.HTTPNotFound(reason=f"no incident or events for session {key!r}")
    request[READER].require_org(view.org)
    return view.row, view.timeline, view.org


def _entry(entry: Mapping[str, Any]) -> str:
    decision = entry.get("decision") or {}
    by = "; ".join(f"{verb} by {who}" for verb, who in (decision.get("by") or {}).items())
    gates = ", ".join(
        f"{g.get('gate')}: {g.get('verdict')}" for g in decision.get("gates") or [] if isinstance(g, dict)
    )
    effects = "".join(
        f"<li>{esc(e.get('type'))} {esc(e.get('channel') or '')} {esc(e.get('receiver') or '')} "
        f"{esc(e.get('title') or e.get('action') or '')}"
        + "".join(f" [{esc(d.get('status'))} ×{esc(d.get('attempts'))}]" for d in e.get("deliveries") or [])
        + "</li>"
        for e in entry.get("effects") or []
    )
    return (
        f'<tr class="entry"><td>{esc(when(entry.get("at")))}</td><td>{esc(entry.get("kind"))}/{esc(entry.get("type"))}</td>'
        f'<td>{esc(entry.get("source"))}</td><td class="labels">{labels_html(entry.get("labels"), limit=LIST_LABELS)}</td>'
        f"<td>{esc(decision.get('outcome'))}{('<br>' + esc(by)) if by else ''}</td>"
        f"<td>{esc(decision.get('severity'))} {esc(decision.get('category'))} {esc(decision.get('runbook'))}</td>"
        f"<td>{esc(gates)}</td><td><ul>{effects}</ul></td></tr>"
    )


async def incident(request: web.Request) -> web.Response:
    key = request.match_info["session_key"]
    try:
        row, entries, org = await _load_incident(request, key)
    except web.HTTPNotFound:
        # A GET on a button's address (a reload after the action, a copied URL): the incident, not a
        # 404 for a session named "<key>/ack". The action itself is only ever a POST with the CSRF token.
        parent, _, action = key.rpartition("/")
        if parent and action in ACTIONS:
            raise web.HTTPSeeOther(incident_url(parent)) from None
        raise
    notice = ""
    done = request.query.get("done", "")
    if done in ACTIONS:
        notice = (
            f'<p class="notice" id="done-{esc(done)}">{esc(ACTION_LABELS[done])}: sent as event '
            f"<code>{esc(request.query.get('event', ''))}</code>.</p>"
        )
    # the incident (the session's n-th episode) the page shows: its buttons act on that one only
    episode = max((e["decision"]["episode"] for e in entries if "episode" in (e.get("decision") or {})), default=None)
    fields = ""
    if row:
        shown = (
            "status",
            "severity",
            "category",
            "runbook",
            "org",
            "first_seen",
            "last_seen",
            "acked_by",
            "silenced_by",
        )
        fields = "".join(
            f'<tr><th>{esc(k)}</th><td id="incident-{esc(k)}">'
            f"{esc(when(row.get(k)) if k.endswith('_seen') else row.get(k))}</td></tr>"
            for k in shown
            if k in row
        )
        if episode is not None:
            fields = f'<tr><th>incident</th><td id="incident-episode">#{episode}</td></tr>{fields}'
        fields = f'<table id="incident">{fields}{_labels_rows(row)}</table>'
    actions = _action_buttons(request, key, row, episode)
    table = (
        '<h2>Timeline</h2><table id="timeline"><thead><tr><th>at</th><th>event</th><th>source</th><th>labels</th>'
        "<th>outcome</th><th>classified</th><th>gates</th><th>effects</th></tr></thead>"
        f"<tbody>{''.join(_entry(e) for e in entries)}</tbody></table>"
    )
    return page(request, key, f"{notice}{fields}{actions}{table}")


def _labels_rows(row: Mapping[str, Any]) -> str:
    """One alert: its labels. Several (a group of pods, disks, nodes): the labels they share, then each alert by
    the labels that tell it apart, so the page does not show one alert's pod beside another's container."""
    alerts = row.get("alerts") or []
    if len(alerts) < 2:
        return f'<tr><th>labels</th><td class="labels">{labels_html(row.get("labels"))}</td></tr>'
    common = common_labels(row)
    each = "".join(
        f'<div class="labels alert">{labels_html({k: v for k, v in a.items() if k not in common}, limit=LIST_LABELS)}</div>'
        for a in alerts
    )
    return (
        f'<tr><th>labels</th><td class="labels" id="incident-labels">{labels_html(common)}</td></tr>'
        f'<tr><th>alerts ({len(alerts)})</th><td id="incident-alerts">{each}</td></tr>'
    )


def _action_buttons(request: web.Request, key: str, row: Mapping[str, Any] | None, episode: int | None) -> str:
    """The message links' actions as buttons, and a link to a silence made from this incident's labels.

    Each form names the incident the page shows (``episode``), as a message's signed links do: a page left
    open while the incident ended and another began does not acknowledge or approve the new one."""
    shown = "" if episode is None else f'<input type="hidden" name="episode" value="{episode}">'
    buttons = "".join(
        f'<form method="post" action="{esc(incident_url(key))}/{action}" class="action">{csrf_field(request)}{shown}'
        f'<button type="submit" id="{action}">{esc(ACTION_LABELS[action])}</button></form>'
        for action in ACTIONS
    )
    labels = common_labels(row) if row else {}  # the whole incident: what its alerts share
    # A label a matcher cannot name (an alert's 'a-b', kept by ingest) is left out of the form (it was a 500).
    prefill = {
        "matchers": ",".join(
            str(make_matcher(k, "=", str(v))) for k, v in sorted(labels.items()) if is_label_name(str(k))
        )
    }
    if row:
        prefill["org"] = str(row.get("org") or "")
    return (
        f'<div id="actions">{buttons}<a id="silence-matchers" href="/silences?{esc(urlencode(prefill))}">'
        "Silence with these labels…</a><p><small>Approve / Reject run or drop the remediation steps waiting for "
        "approval (nothing, if none wait); Silence 1 h / 4 h mute this session only.</small></p></div>"
    )


async def act(request: web.Request) -> web.StreamResponse:
    """A button: the event the same action's signed link in a message produces, with the login as the actor."""
    key, action = request.match_info["session_key"], request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(reason=f"no action {action!r}; the actions are {', '.join(ACTIONS)}")
    _, _, org = await _load_incident(request, key)
    user = request[SESSION].user
    named = (await request.post()).get("episode")  # the incident the page showed (none on a page of before)
    try:
        episode = parse_episode(named if isinstance(named, str) and named else None)
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
    now = int(time.time() * 1000)
    event = action_event(
        action=action,
        session=key,
        org=org,
        actor=user,
        unique=f"{user}:{uuid.uuid4().hex}",
        now=now,
        via="console",
        episode=episode,
    )
    await request.app[SEND](event)
    log.info("%s of %s (org %s) by %s: event %s", action, key, org, user, event["event_id"])
    raise web.HTTPSeeOther(f"{incident_url(key)}?{urlencode({'done': action, 'event': event['event_id']})}")
