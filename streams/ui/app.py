"""The web console (aiohttp, server-rendered HTML, no script): ``opsloop ui``.

Pages::

    GET  /login, POST /login, POST /logout
    GET  /                          incidents (default: firing), Alertmanager matcher filter, sort, pages
    GET  /incident/{session}        the incident and its audit timeline
    POST /incident/{session}/ack    produce the ``ack`` event (as a message's link does), actor = the user
    GET  /silences                  silences (active, pending, expired)
    POST /silences                  produce ``silence.created`` (as ``opsloop silence add`` does)

Reads call :mod:`streams.audit.queries` in-process (what the read API answers). Writes are
events produced to Kafka (``events.webhook``): decide does the rest, the projector folds it
back into what these pages show. Every page needs a session (``/login``); every POST needs
the session's CSRF token in the form (checked in constant time, 403 otherwise); every
request is logged with who made it; no token or secret is ever rendered.
"""

from __future__ import annotations

import asyncio
import html
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from aiohttp import web

from streams.api.auth import ApiAuth, AuthError, Reader
from streams.audit import queries, store, timeline
from streams.audit.incidents import STATUSES
from streams.audit.queries import IncidentQuery, QueryError
from streams.core.actions import action_event
from streams.model.silences import SilenceError, silence_event, silence_from_json
from streams.model.yamlfile import parse_duration_ms
from streams.ui.auth import COOKIE, LOGIN_COOKIE, SESSION_S, Session, SessionSigner, same_token

log = logging.getLogger("streams.ui")

Send = Callable[[dict[str, Any]], Awaitable[Any]]

ENGINE = web.AppKey("engine", sa.Engine)
AUTH = web.AppKey("auth", ApiAuth)
SIGNER = web.AppKey("signer", SessionSigner)
SEND: web.AppKey[Send] = web.AppKey("send")
OPTIONS: web.AppKey[dict[str, Any]] = web.AppKey("options")
SESSION = web.RequestKey("session", Session)
READER = web.RequestKey("reader", Reader)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"), ("GET", "/favicon.ico")}
SORTABLE = {"session_key": "session", "last_seen": "last seen", "first_seen": "first seen"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff;text-decoration:none}header form{margin-left:auto}
main{padding:1em 1.2em}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #dde;padding:.35em .5em;text-align:left;vertical-align:top;font-size:.92em}
th a{color:inherit}.status-firing{color:#b00020;font-weight:600}.status-acknowledged{color:#8a6d00}
.status-resolved{color:#2e7d32}.status-silenced{color:#666}.error{background:#fde;padding:.5em;border:1px solid #c99}
.notice{background:#efe;padding:.5em;border:1px solid #9c9}code{font-size:.9em}
input[type=text]{width:32em}label{display:block;margin:.4em 0}.labels span{display:inline-block;
background:#eef;border-radius:3px;padding:0 .3em;margin:1px}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(ms: Any) -> str:
    if not isinstance(ms, int | float) or not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def incident_url(session_key: str) -> str:
    return "/incident/" + quote(session_key, safe="")


def csrf_field(request: web.Request) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(request[SESSION].csrf)}">'


def page(
    request: web.Request, title: str, body: str, *, status: int = 200, refresh_s: int | None = None
) -> web.Response:
    session = request.get(SESSION)
    nav = ""
    if session is not None:
        nav = (
            '<a href="/">Incidents</a><a href="/silences">Silences</a>'
            f'<form method="post" action="/logout">{csrf_field(request)}'
            f'<span>{esc(session.user)}</span> <button type="submit">Log out</button></form>'
        )
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}'
        f"<title>{esc(title)} · opsloop</title><style>{STYLE}</style></head>"
        f"<body><header><strong>opsloop</strong>{nav}</header><main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def _refuse(request: web.Request, status: int, reason: str) -> web.Response:
    return page(request, {400: "Bad request", 403: "Forbidden", 404: "Not found"}.get(status, "Error"),
                f'<p class="error">{esc(reason)}</p>', status=status)  # fmt: skip


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session on every page, CSRF on every POST, one log line per request naming who made it."""
    who = "-"
    try:
        if (request.method, request.path) not in OPEN:
            session = request.app[SIGNER].read(request.cookies.get(COOKIE))
            reader = request.app[AUTH].reader(session.user) if session else None
            if session is None or reader is None:
                if request.method == "GET":
                    response: web.StreamResponse = see_other("/login?" + urlencode({"next": request.path_qs}))
                else:
                    response = web.Response(status=401, text="log in first", headers=SECURITY_HEADERS)
                log.info("%s %s by %s -> %d", request.method, request.path, who, response.status)
                return response
            who = session.user
            request[SESSION] = session
            request[READER] = reader
            if request.method == "POST":
                form = await request.post()
                offered = form.get("csrf")
                if not same_token(offered if isinstance(offered, str) else None, session.csrf):
                    log.warning("%s %s by %s refused: CSRF token missing or wrong", request.method, request.path, who)
                    response = _refuse(request, 403, "The form's CSRF token is missing or wrong; reload the page.")
                    log.info("%s %s by %s -> %d", request.method, request.path, who, response.status)
                    return response
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            log.info("%s %s by %s -> %d", request.method, request.path, who, exc.status)
            raise
        response = _refuse(request, exc.status, exc.reason)
    except AuthError as exc:
        response = _refuse(request, exc.status, exc.reason)
    except QueryError as exc:
        response = _refuse(request, 400, str(exc))
    except Exception:
        log.exception("%s %s by %s failed", request.method, request.path, who)
        response = page(request, "Error", '<p class="error">Internal error (see the log).</p>', status=500)
    log.info("%s %s by %s -> %d", request.method, request.path, who, response.status)
    return response


async def _db(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, request.app[ENGINE], *args, **kwargs)


# -- login ---------------------------------------------------------------------------


def _next(value: Any) -> str:
    """Only a local path (no scheme, no host): an open redirect otherwise."""
    text = value if isinstance(value, str) else "/"
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text else "/"


def _login_form(request: web.Request, nxt: str, error: str = "", status: int = 200) -> web.Response:
    # One token per browser until it logs in: a second tab (or the favicon) must not void the first form's.
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not (43 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()):
        token = secrets.token_urlsafe(32)
    message = f'<p class="error">{esc(error)}</p>' if error else ""
    body = (
        f'{message}<form method="post" action="/login">'
        f'<input type="hidden" name="csrf" value="{esc(token)}">'
        f'<input type="hidden" name="next" value="{esc(nxt)}">'
        '<label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label>'
        '<button type="submit">Log in</button></form>'
    )
    response = page(request, "Log in", body, status=status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", max_age=3600,
                        secure=request.app[OPTIONS]["secure_cookie"], path="/login")  # fmt: skip
    return response


async def login_page(request: web.Request) -> web.Response:
    return _login_form(request, _next(request.query.get("next")))


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    nxt = _next(form.get("next"))
    offered = form.get("csrf")
    if not same_token(offered if isinstance(offered, str) else None, request.cookies.get(LOGIN_COOKIE, "")):
        log.warning("POST /login refused: CSRF token missing or wrong")
        return _login_form(request, nxt, "The form expired; try again.", status=403)
    token = form.get("token")
    try:
        reader = request.app[AUTH].check(f"Bearer {token}" if isinstance(token, str) else None)
    except AuthError:
        log.warning("POST /login refused: unknown token")
        return _login_form(request, nxt, "Unknown token.", status=401)
    cookie, _ = request.app[SIGNER].issue(reader.name)
    response = see_other(nxt)
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", max_age=SESSION_S,
                        secure=request.app[OPTIONS]["secure_cookie"], path="/")  # fmt: skip
    response.del_cookie(LOGIN_COOKIE, path="/login")
    log.info("login by %s", reader.name)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    log.info("logout by %s", request[SESSION].user)
    response = see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


# -- incidents -----------------------------------------------------------------------


def _labels(labels: Mapping[str, Any] | None) -> str:
    return "".join(f"<span>{esc(k)}={esc(v)}</span>" for k, v in sorted((labels or {}).items()))


def _link(params: Mapping[str, str], **changes: str | None) -> str:
    merged = {**params, **changes}
    return "/?" + urlencode({k: v for k, v in merged.items() if v})


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
    result = await _db(request, queries.list_incidents, q)
    heads = []
    for key, label in SORTABLE.items():
        current = sort.lstrip("-+")
        if current == key:  # the sorted column: the other direction
            flip = key if sort.startswith("-") else f"-{key}"
        else:  # times newest first, sessions A to Z
            flip = f"-{key}" if key.endswith("_seen") else key
        arrow = (" ▼" if sort.startswith("-") else " ▲") if current == key else ""
        heads.append(f'<th><a href="{esc(_link(params, sort=flip, cursor=None))}">{esc(label)}{arrow}</a></th>')
    rows = []
    for item in result.items:
        rows.append(
            f'<tr class="incident"><td><a href="{esc(incident_url(item["session_key"]))}">{esc(item["session_key"])}</a></td>'
            f"<td>{esc(when(item.get('last_seen')))}</td><td>{esc(when(item.get('first_seen')))}</td>"
            f'<td class="status-{esc(item.get("status"))}">{esc(item.get("status"))}</td>'
            f"<td>{esc(item.get('severity'))}</td><td>{esc(item.get('category'))}</td><td>{esc(item.get('org'))}</td>"
            f'<td class="labels">{_labels(item.get("labels"))}</td><td>{esc(item.get("acked_by"))}</td></tr>'
        )
    table = (
        f'<table id="incidents"><thead><tr>{"".join(heads)}<th>status</th><th>severity</th><th>category</th>'
        f"<th>org</th><th>labels</th><th>acknowledged by</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    if not rows:
        table += "<p>No incidents match.</p>"
    pager = []
    if query.get("cursor"):
        pager.append(f'<a href="{esc(_link(params, cursor=None))}">First page</a>')
    if result.next_cursor:
        pager.append(f'<a href="{esc(_link(params, cursor=result.next_cursor))}" rel="next">Next page</a>')
    refresh = request.app[OPTIONS]["refresh_s"]
    body = f"{form}{table}<p>{' · '.join(pager)}</p><p><small>Refreshes every {refresh} s.</small></p>"
    return page(request, "Incidents", body, refresh_s=refresh)


async def _load_incident(request: web.Request, key: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
    def load(engine: sa.Engine) -> tuple[dict[str, Any] | None, dict[str, list[dict[str, Any]]]]:
        return queries.get_incident(engine, key), store.session_rows(engine, key)

    row, rows = await asyncio.to_thread(load, request.app[ENGINE])
    org = row["org"] if row else next((e.get("org") for e in rows.get("events", [])), None)
    if org is None:
        raise web.HTTPNotFound(reason=f"no incident or events for session {key!r}")
    request[READER].require_org(org)
    return row, timeline.build(rows), org


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
        f'<td>{esc(entry.get("source"))}</td><td class="labels">{_labels(entry.get("labels"))}</td>'
        f"<td>{esc(decision.get('outcome'))}{('<br>' + esc(by)) if by else ''}</td>"
        f"<td>{esc(decision.get('severity'))} {esc(decision.get('category'))} {esc(decision.get('runbook'))}</td>"
        f"<td>{esc(gates)}</td><td><ul>{effects}</ul></td></tr>"
    )


async def incident(request: web.Request) -> web.Response:
    key = request.match_info["session_key"]
    row, entries, org = await _load_incident(request, key)
    notice = ""
    if request.query.get("acked"):
        notice = f'<p class="notice" id="acked">Acknowledgement sent as event <code>{esc(request.query["acked"])}</code>.</p>'
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
            "silence_id",
        )
        fields = "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(when(row.get(k)) if k.endswith('_seen') else row.get(k))}</td></tr>"
            for k in shown
            if k in row
        )
        fields = f'<table id="incident">{fields}<tr><th>labels</th><td class="labels">{_labels(row.get("labels"))}</td></tr></table>'
    ack = (
        f'<form method="post" action="{esc(incident_url(key))}/ack">{csrf_field(request)}'
        '<button type="submit" id="ack">Acknowledge</button></form>'
    )
    table = (
        '<h2>Timeline</h2><table id="timeline"><thead><tr><th>at</th><th>event</th><th>source</th><th>labels</th>'
        "<th>outcome</th><th>classified</th><th>gates</th><th>effects</th></tr></thead>"
        f"<tbody>{''.join(_entry(e) for e in entries)}</tbody></table>"
    )
    return page(request, key, f"{notice}{fields}{ack}{table}")


async def acknowledge(request: web.Request) -> web.StreamResponse:
    key = request.match_info["session_key"]
    _, _, org = await _load_incident(request, key)
    user = request[SESSION].user
    now = int(time.time() * 1000)
    event = action_event(
        action="ack", session=key, org=org, actor=user, unique=f"{user}:{uuid.uuid4().hex}", now=now, via="console"
    )
    await request.app[SEND](event)
    log.info("ack of %s (org %s) by %s: event %s", key, org, user, event["event_id"])
    raise web.HTTPSeeOther(f"{incident_url(key)}?{urlencode({'acked': event['event_id']})}")


# -- silences ------------------------------------------------------------------------


async def silences(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    reader: Reader = request[READER]
    state = request.query.get("state") or None
    if state not in (None, "active", "pending", "expired"):
        raise QueryError(f"state: {state!r} is not one of active, pending, expired")
    now = int(time.time() * 1000)
    found = await _db(request, queries.list_silences, now, orgs=reader.orgs, state=state)
    rows = "".join(
        f'<tr class="silence state-{esc(s["state"])}"><td>{esc(s["id"])}</td><td>{esc(s["state"])}</td><td>{esc(s["org"])}</td>'
        f"<td><code>{esc(', '.join(s.get('matchers') or []))}</code></td><td>{esc(when(s['starts_at']))}</td>"
        f"<td>{esc(when(s['ends_at']))}</td><td>{esc(s.get('created_by'))}</td><td>{esc(s.get('comment'))}</td></tr>"
        for s in found
    )
    states = " · ".join(f'<a href="/silences?state={s}">{s}</a>' for s in ("active", "pending", "expired"))
    orgs = sorted(reader.orgs) if reader.orgs is not None else None
    org_field = (
        '<select name="org">' + "".join(f'<option value="{esc(o)}">{esc(o)}</option>' for o in orgs) + "</select>"
        if orgs
        else f'<input type="text" name="org" value="{esc(request.app[OPTIONS]["default_org"])}">'
    )
    message = f'<p class="error">{esc(error)}</p>' if error else ""
    if request.query.get("created"):
        message += f'<p class="notice">Silence <code>{esc(request.query["created"])}</code> sent.</p>'
    body = (
        f'{message}<p><a href="/silences">all</a> · {states}</p>'
        '<table id="silences"><thead><tr><th>id</th><th>state</th><th>org</th><th>matchers</th><th>starts</th>'
        f"<th>ends</th><th>by</th><th>comment</th></tr></thead><tbody>{rows}</tbody></table>"
        f'<h2>New silence</h2><form method="post" action="/silences">{csrf_field(request)}'
        '<label>Matchers <input type="text" name="matchers" placeholder=\'service="db-main",severity="urgent"\'></label>'
        '<label>Duration <input type="text" name="duration" value="2h" size="6"></label>'
        f'<label>Org {org_field}</label><label>Comment <input type="text" name="comment"></label>'
        '<button type="submit">Create silence</button></form>'
    )
    return page(request, "Silences", body, status=status)


async def silences_page(request: web.Request) -> web.Response:
    return await silences(request)


async def create_silence(request: web.Request) -> web.StreamResponse:
    reader: Reader = request[READER]
    user = request[SESSION].user
    form = await request.post()

    def field(name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    org = field("org") or request.app[OPTIONS]["default_org"]
    now = int(time.time() * 1000)
    try:
        reader.require_org(org)
        matchers = [str(m) for m in queries.parse_filter(field("matchers"))]
        if not matchers:
            raise SilenceError('matchers: give at least one, e.g. service="db-main"')
        silence = silence_from_json(
            {
                "matchers": matchers,
                "starts_at": now,
                "ends_at": now + parse_duration_ms(field("duration") or "2h"),
                "created_by": user,
                "comment": field("comment"),
            }
        )
    except AuthError as exc:
        return await silences(request, error=exc.reason, status=exc.status)
    except (SilenceError, QueryError, ValueError) as exc:
        return await silences(request, error=str(exc), status=400)
    event = silence_event(silence, org=org, now_ms=now, actor=user)
    await request.app[SEND](event)
    log.info("silence %s (org %s, %s) by %s", silence.silence_id, org, ", ".join(matchers), user)
    raise web.HTTPSeeOther("/silences?" + urlencode({"created": silence.silence_id}))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def create_app(
    engine: sa.Engine,
    auth: ApiAuth,
    send: Send,
    *,
    signer: SessionSigner | None = None,
    refresh_s: int = 30,
    default_org: str = "default",
    secure_cookie: bool = False,
) -> web.Application:
    """The console; ``send`` produces one event (an EventProducer's ``send`` in production)."""
    app = web.Application(middlewares=[guard])
    app[ENGINE] = engine
    app[AUTH] = auth
    app[SIGNER] = signer or SessionSigner()
    app[SEND] = send
    app[OPTIONS] = {"refresh_s": refresh_s, "default_org": default_org, "secure_cookie": secure_cookie}
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/", incidents)
    app.router.add_post("/incident/{session_key:.+}/ack", acknowledge)
    app.router.add_get("/incident/{session_key:.+}", incident)
    app.router.add_get("/silences", silences_page)
    app.router.add_post("/silences", create_silence)
    return app


def serve(host: str, port: int, environ: Mapping[str, str] | None = None) -> int:
    """``opsloop ui``: tokens, database and Kafka from the environment, read once; serve until stopped."""
    import os

    from streams.db import make_engine
    from streams.kafka.producer import EventProducer
    from streams.logs import configure, register_secrets
    from streams.settings import Settings
    from streams.ui.auth import SECRET_VARIABLE, console_auth

    env = os.environ if environ is None else environ
    settings = Settings.from_env()
    configure(settings.log_level, settings.log_format)
    auth = console_auth(env)
    secrets_: Iterable[str] = [*settings.secret_values(), *auth.secrets()]
    if env.get(SECRET_VARIABLE):
        secrets_ = [*secrets_, env[SECRET_VARIABLE]]
    register_secrets(*secrets_)
    engine = make_engine(settings.database_url.get_secret_value())
    store.migrate(engine)
    producers: list[EventProducer] = []  # made in the server's loop (aiokafka needs a running one)

    async def send(event: dict[str, Any]) -> Any:
        return await producers[0].send(event)

    app = create_app(
        engine,
        auth,
        send,
        signer=SessionSigner.from_environ(env),
        refresh_s=int(env.get("OPSLOOP_UI_REFRESH_S", "30")),
        default_org=settings.ingest.default_org,
        secure_cookie=env.get("OPSLOOP_UI_SECURE_COOKIE", "false").lower() in ("1", "true", "yes"),
    )

    async def start(_: web.Application) -> None:
        producers.append(await EventProducer(settings).start())

    async def stop(_: web.Application) -> None:
        for producer in producers:
            await producer.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    log.info("console on http://%s:%d for %s", host, port, ", ".join(auth.names))
    web.run_app(app, host=host, port=port, print=None)
    return 0
