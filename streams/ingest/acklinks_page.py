"""``GET|POST /ingest/ack``: the page behind a message's signed action links.

GET checks the link and shows a small page saying what it will do; it changes
nothing, because chat clients, mail scanners and link previews fetch links before a
person clicks. The page's button POSTs the signed fields back (a plain form); the
POST checks them again and produces the event (:mod:`streams.ingest.actions`) through
the same produce path as every other post, with the actor recorded as
"signed link", then says what happened. The event id derives from the link id, so a
second POST of the same link is a duplicate: the page answers that the link was
already used (409) and nothing new reaches decide. An expired or altered link is
refused with 403 and the reason; without ``OPSLOOP_ACK_SECRET`` the route is 404.
Everything shown is HTML-escaped; the page has a strict CSP, is never cached and
sends no Referer (the link carries its signature).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import cast

from aiohttp import web

from streams.core.acklinks import ACTION_LABELS, AckLinkError, ActionLink, verify_action_query
from streams.ingest.actions import DONE, WILL, action_event, action_principal
from streams.ingest.errors import IngestError
from streams.ingest.pipeline import INGEST, Ingest, now

ACTOR = "signed link"
FIELDS = ("session", "action", "org", "expires", "jti", "episode", "sig")
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
}


def page(
    title: str, message: str, *, status: int = 200, form: str = "", extra_headers: Mapping[str, str] | None = None
) -> web.Response:
    e = html.escape
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · opsloop</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em}"
        "button{font-size:1.1em;padding:.5em 1.2em}code{word-break:break-all}</style></head><body>"
        f"<h1>{e(title)}</h1><p>{message}</p>{form}</body></html>"
    )
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**HEADERS, **(extra_headers or {})},
    )


def _what(link: ActionLink) -> str:
    e = html.escape
    org = f" (org <code>{e(link.org)}</code>)" if link.org else ""
    episode = f", its incident #{link.episode}" if link.episode is not None else ""
    return f"session <code>{e(link.session)}</code>{org}{episode}"


def _secret(ingest: Ingest) -> str:
    return ingest.settings.ack.secret.get_secret_value()


def _verify(ingest: Ingest, params: Mapping[str, str]) -> ActionLink | web.Response:
    secret = _secret(ingest)
    if not secret:
        return page(
            "Not enabled", "Action links are not enabled on this opsloop (OPSLOOP_ACK_SECRET is not set).", status=404
        )
    try:
        return verify_action_query(params, secret, now())
    except AckLinkError as exc:
        return page(
            "Link refused", f"This link cannot be used: {html.escape(exc.reason)}. Nothing was changed.", status=403
        )


async def get_ack(request: web.Request) -> web.Response:
    """Show what the link will do; change nothing."""
    ingest = request.app[INGEST]
    link = _verify(ingest, request.query)
    if isinstance(link, web.Response):
        return link
    label = ACTION_LABELS[link.action]
    values = {
        "session": link.session,
        "action": link.action,
        "org": link.org,
        "expires": str(link.expires_at),
        "jti": link.jti,
        "episode": "" if link.episode is None else str(link.episode),
        "sig": link.sig,
    }
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{html.escape(v, quote=True)}">' for k, v in values.items() if v
    )
    form = f'<form method="post" action="{html.escape(request.path, quote=True)}">{hidden}<button type="submit">{html.escape(label)}</button></form>'
    return page(
        f"{label}?",
        f"This will {html.escape(WILL[link.action])} {_what(link)}. Nothing happens until you press the button.",
        form=form,
    )


async def post_ack(request: web.Request) -> web.Response:
    """Produce the link's event (once); say what happened."""
    ingest = request.app[INGEST]
    ingest.check_length(request)
    form = await request.post()
    params = {k: str(form[k]) for k in FIELDS if k in form and isinstance(form[k], str)}
    if not params:  # a client that posts to the link itself
        params = dict(request.query)
    link = _verify(ingest, params)
    if isinstance(link, web.Response):
        return link
    org = link.org or ingest.config.default_org
    event = action_event(
        action=link.action,
        session=link.session,
        org=org,
        actor=ACTOR,
        unique=link.link_id,
        now=now(),
        via="link",
        episode=link.episode,
    )
    try:
        answer = await ingest.accept([ingest.finish(event, principal=action_principal("link"))], "ack")
    except IngestError as exc:
        return page(
            "Not done",
            f"{html.escape(exc.reason)}. Nothing was changed; try again shortly.",
            status=exc.status,
            extra_headers=exc.headers,
        )
    status = json.loads(cast(bytes, answer.body))["status"]  # json_response: the body is bytes
    if status == "duplicate":
        return page("Already used", f"This link was already used; {_what(link)} was not changed again.", status=409)
    ended = " If that incident has ended since, nothing was changed." if link.episode is not None else ""
    return page("Done", f"{html.escape(DONE[link.action])} {_what(link)} (recorded as {ACTOR}).{ended}")
