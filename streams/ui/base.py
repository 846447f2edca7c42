"""What every console page shares: the app's keys, escaping, the page frame, redirects and refusals.

One place renders HTML around a body and escapes every value (:func:`esc`), so a page
module only builds its body; the security headers (a strict CSP: no script at all) go
on every answer from here.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from aiohttp import web

from streams.api.auth import ApiAuth, Reader
from streams.model.records import utc_text
from streams.settings import Settings
from streams.ui.auth import ProxyAuth, Session, SessionSigner

Send = Callable[[dict[str, Any]], Awaitable[Any]]
# ``opsloop route test``'s answer for ``label=value`` pairs (streams.cli.runbooks.route_test over the loaded set)
RouteTest = Callable[[Sequence[str]], list[str]]

ENGINE = web.AppKey("engine", sa.Engine)
AUTH = web.AppKey("auth", ApiAuth)
SIGNER = web.AppKey("signer", SessionSigner)
SEND: web.AppKey[Send] = web.AppKey("send")
OPTIONS: web.AppKey[dict[str, Any]] = web.AppKey("options")
KAFKA: web.AppKey[Settings | None] = web.AppKey("kafka")  # where dead letters are read and redriven
ROUTE_TEST: web.AppKey[RouteTest | None] = web.AppKey("route_test")
PROXY: web.AppKey[ProxyAuth | None] = web.AppKey("proxy")  # a trusted SSO proxy's user header, if configured
SESSION = web.RequestKey("session", Session)
READER = web.RequestKey("reader", Reader)
FRESH_COOKIE = web.RequestKey("fresh_cookie", str)  # a session cookie issued for a proxy-vouched request

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
background:#eef;border-radius:3px;padding:0 .3em;margin:1px}td form{display:inline;margin:0}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(ms: Any) -> str:
    if not isinstance(ms, int | float) or not ms:
        return ""
    return utc_text(ms)


def incident_url(session_key: str) -> str:
    return "/incident/" + quote(session_key, safe="")


LIST_LABELS = 24  # labels a list row shows; the incident's own page shows them all
LIST_VALUE_CHARS = 200


def labels_html(labels: Mapping[str, Any] | None, *, limit: int | None = None) -> str:
    """``limit`` (list rows): at most that many labels, values cut at LIST_VALUE_CHARS, then "+N more", so one
    alert with thousands of long labels cannot make the incidents page megabytes long."""
    items = sorted((labels or {}).items())
    shown = items if limit is None else items[:limit]

    def value(v: Any) -> str:
        text = "" if v is None else str(v)
        return text if limit is None or len(text) <= LIST_VALUE_CHARS else text[:LIST_VALUE_CHARS] + "…"

    more = f"<span>+{len(items) - len(shown)} more</span>" if len(items) > len(shown) else ""
    return "".join(f"<span>{esc(k)}={esc(value(v))}</span>" for k, v in shown) + more


def csrf_field(request: web.Request) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(request[SESSION].csrf)}">'


def page(
    request: web.Request, title: str, body: str, *, status: int = 200, refresh_s: int | None = None
) -> web.Response:
    session = request.get(SESSION)
    nav = ""
    if session is not None:
        nav = (
            '<a href="/">Incidents</a><a href="/silences">Silences</a><a href="/deadletters">Dead letters</a>'
            '<a href="/route">Route test</a>'
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


def refuse(request: web.Request, status: int, reason: str) -> web.Response:
    return page(request, {400: "Bad request", 403: "Forbidden", 404: "Not found"}.get(status, "Error"),
                f'<p class="error">{esc(reason)}</p>', status=status)  # fmt: skip


async def db(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a query function of :mod:`streams.audit.queries` off the loop (they are synchronous SQLAlchemy)."""
    return await asyncio.to_thread(fn, request.app[ENGINE], *args, **kwargs)


def org_field(request: web.Request, selected: str = "") -> str:
    """The org an action is for: a choice among a limited reader's orgs, else free text (the default org)."""
    orgs = request[READER].orgs
    if orgs:
        return (
            '<select name="org">'
            + "".join(
                f'<option value="{esc(o)}"{" selected" if o == selected else ""}>{esc(o)}</option>'
                for o in sorted(orgs)
            )
            + "</select>"
        )
    return f'<input type="text" name="org" value="{esc(selected or request.app[OPTIONS]["default_org"])}">'


def form_text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""
