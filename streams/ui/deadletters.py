"""The dead-letters page: what ``events.dlq`` and ``outbox.dlq`` hold, why, and a Redrive button.

It reads and redrives with :mod:`streams.kafka.redrive`, the functions ``opsloop dlq
list|redrive`` calls: a letter's record goes back to its source topic once (the mark on
``dlq.redriven``), and a redriven notification the delivery ledger finds delivered is
not sent again. Below them, the records the projector could not store
(:func:`streams.audit.store.dead_letters`, what ``/api/v1/deadletters`` answers), which
need no redrive (the record itself stays in Kafka).

Dead letters hold records of any org: like the read API, a login limited to some orgs
gets 403 here. A letter's record is never rendered (only its key, position and reason),
and reasons pass through the log's secret mask as well.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from urllib.parse import urlencode

from aiohttp import web

from streams.audit import store
from streams.kafka import redrive
from streams.logs import SECRETS
from streams.settings import Settings
from streams.ui.base import KAFKA, READER, SESSION, csrf_field, db, esc, form_text, page, when

log = logging.getLogger("streams.ui")

WHAT = "dead letters"


def _kafka(request: web.Request) -> Settings:
    request[READER].require_all_orgs(WHAT)
    settings = request.app[KAFKA]
    if settings is None:
        raise web.HTTPServiceUnavailable(reason="this console was started without Kafka settings")
    return settings


def _reason(letter: redrive.Letter) -> str:
    return SECRETS.mask(str(letter.record.get("reason") or ""))


def _button(request: web.Request, fields: dict[str, str], label: str, button_id: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())
    return (
        f'<form method="post" action="/deadletters/redrive">{csrf_field(request)}{hidden}'
        f'<button type="submit" id="{esc(button_id)}">{esc(label)}</button></form>'
    )


def _letter_row(request: web.Request, letter: redrive.Letter, marks: set[str]) -> str:
    r = letter.record
    key = (r.get("key") or b"").decode(errors="replace")
    done = letter.mark in marks
    action = "redriven" if done else _button(request, {"mark": letter.mark}, "Redrive", f"redrive-{letter.mark}")
    return (
        f'<tr class="letter{" redriven" if done else ""}" data-mark="{esc(letter.mark)}">'
        f"<td>{esc(letter.dlq)}[{esc(letter.partition)}]@{esc(letter.offset)}</td><td>{esc(when(r.get('failed_at')))}</td>"
        f"<td>{esc(r.get('stage'))}</td><td>{esc(letter.source)}[{esc(r.get('partition'))}]@{esc(r.get('offset'))}</td>"
        f'<td>{esc(key)}</td><td class="reason">{esc(_reason(letter))}</td><td>{action}</td></tr>'
    )


async def dead_letters(request: web.Request) -> web.Response:
    settings = _kafka(request)
    letters, marks = await redrive.read(settings, list(redrive.SOURCES))
    notice = ""
    sent, of = request.query.get("sent", ""), request.query.get("of", "")
    if sent.isdigit() and of.isdigit():  # numbers only: a link cannot put words on this page
        skipped = int(of) - int(sent)
        notice = (
            f'<p class="notice" id="redriven">{int(sent)} of {int(of)} dead letter(s) redriven'
            + (f"; {skipped} already redriven or without a record" if skipped else "")
            + ".</p>"
        )
    groups: dict[str, list[redrive.Letter]] = defaultdict(list)
    for letter in letters:
        groups[_reason(letter)].append(letter)
    sections = []
    for reason, group in sorted(groups.items(), key=lambda item: -len(item[1])):
        waiting = [x for x in group if x.mark not in marks]
        everything = (
            _button(request, {"reason": reason}, f"Redrive all {len(waiting)} with this reason", "redrive-reason")
            if len(waiting) > 1
            else ""
        )
        rows = "".join(_letter_row(request, x, marks) for x in group)
        sections.append(
            f'<section class="reason-group"><h3><code>{esc(reason)}</code> · {len(group)} letter(s), '
            f"{len(group) - len(waiting)} redriven</h3>{everything}"
            '<table class="letters"><thead><tr><th>dead letter</th><th>failed</th><th>stage</th><th>source</th>'
            f"<th>key</th><th>reason</th><th></th></tr></thead><tbody>{rows}</tbody></table></section>"
        )
    kafka_part = "".join(sections) or '<p id="no-letters">No dead letters.</p>'
    stored = await db(request, store.dead_letters)
    stored_rows = "".join(
        f"<tr><td>{esc(d['topic'])}[{esc(d['partition'])}]@{esc(d['offset'])}</td>"
        f"<td>{esc(SECRETS.mask(str(d['reason'])))}</td></tr>"
        for d in stored
    )
    body = (
        f"{notice}<p>From <code>{' and '.join(redrive.SOURCES)}</code>. Redrive after the fix: the record goes "
        "back to its source topic once; a notification already delivered is not sent again.</p>"
        f"{kafka_part}<h2>Records the projector could not store</h2>"
        '<table id="audit-dead-letters"><thead><tr><th>record</th><th>reason</th></tr></thead>'
        f"<tbody>{stored_rows}</tbody></table>"
    )
    return page(request, "Dead letters", body)


async def redrive_letters(request: web.Request) -> web.StreamResponse:
    settings = _kafka(request)
    user = request[SESSION].user
    form = await request.post()
    mark, reason = form_text(form, "mark"), form_text(form, "reason")
    if not mark and not reason:
        raise web.HTTPBadRequest(reason="name one dead letter (mark) or a reason")
    letters, marks = await redrive.read(settings, list(redrive.SOURCES))
    if mark:
        chosen = redrive.select(letters, mark=mark)
    else:  # the group the page showed: this reason exactly (select's is "contains"), as the page shows it
        chosen = [x for x in letters if _reason(x) == reason]
    if not chosen:
        raise web.HTTPNotFound(reason="no dead letter matches (refresh the page)")
    done = await redrive.redrive(settings, chosen, marks)
    for letter, what in done:
        log.info("redrive of %s (%s) by %s: %s", letter.mark, letter.dlq, user, what)
    sent = sum(1 for _, what in done if what.startswith("redriven"))
    raise web.HTTPSeeOther("/deadletters?" + urlencode({"sent": sent, "of": len(done)}))
