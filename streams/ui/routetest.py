"""The route-test form: labels in, the runbook, routes and receivers out.

The answer is ``opsloop route test``'s (:func:`streams.cli.runbooks.route_test` over the
runbook set the console loaded at start), handed in by the command line as a function:
the console, a lower layer, imports neither the CLI, the classifier nor the channels.
Labels are typed as in the incidents filter (``alertname=PgDown,severity=critical``),
parsed by the same matcher parser; only ``=`` makes sense for an event's labels.
A GET: it changes nothing, so it needs no CSRF token and can be bookmarked.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from streams.audit import queries
from streams.errors import InvalidInputError
from streams.ui.base import OPTIONS, READER, ROUTE_TEST, SESSION, esc, org_field, page

log = logging.getLogger("streams.ui")

EXAMPLE = "alertname=PgDown,severity=critical,service=db"


def pairs_of(text: str, org: str) -> list[str]:
    """``label=value`` pairs of the form's text (InvalidInputError names a matcher that is not ``=``)."""
    pairs = []
    for m in queries.parse_filter(text):
        if m.op != "=":
            raise InvalidInputError(f"labels: {m} is a matcher; give label=value pairs")
        pairs.append(f"{m.name}={m.value}")
    if not pairs:
        raise InvalidInputError(f"labels: give at least one label=value, e.g. {EXAMPLE}")
    if not any(p.startswith("org=") for p in pairs):
        pairs.append(f"org={org}")
    return pairs


async def route_test(request: web.Request) -> web.Response:
    test = request.app[ROUTE_TEST]
    if test is None:
        raise web.HTTPServiceUnavailable(reason="this console was started without the runbook set")
    text = request.query.get("labels", "").strip()
    org = request.query.get("org", "").strip() or request.app[OPTIONS]["default_org"]
    form = (
        '<form method="get" action="/route" id="route-test"><label>Labels '
        f'<input type="text" name="labels" value="{esc(text)}" placeholder="{esc(EXAMPLE)}"></label>'
        f"<label>Org {org_field(request, org)}</label>"
        '<button type="submit" id="route-submit">Test</button></form>'
    )
    if not text:
        return page(request, "Route test", form)
    try:
        pairs = pairs_of(text, org)
        request[READER].require_org(next(p[4:] for p in pairs if p.startswith("org=")))
        lines = await asyncio.to_thread(test, pairs)
    except InvalidInputError as exc:
        return page(request, "Route test", f'{form}<p class="error">{esc(exc)}</p>', status=400)
    log.info("route test by %s: %s", request[SESSION].user, " ".join(pairs))
    rows = "".join(
        f'<tr class="answer-{esc(k.strip())}"><th>{esc(k.strip())}</th><td>{esc(v.strip())}</td></tr>'
        for k, _, v in (line.partition(":") for line in lines)
    )
    return page(request, "Route test", f'{form}<table id="route-answer"><tbody>{rows}</tbody></table>')
