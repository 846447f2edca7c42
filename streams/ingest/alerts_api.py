"""Alertmanager's alert list on ingest, so ``amtool alert query`` (amtool's default command) works.

    GET /api/v2/alerts[?filter=..&active=..&silenced=..&receiver=..]   GettableAlerts   bearer token, control: true

The alerts firing now, as the audit store recorded them (:func:`streams.audit.queries.firing_alerts`: each
alert's latest event of the last 24 hours, firing, its ``endsAt`` still ahead), limited to the token's
orgs. Each carries its ``org`` as a label (as silences and inhibit rules see it), the receivers its
incident was last notified through, and ``suppressed`` with the ids of the active silences that mute it.
Where it differs from Alertmanager: inhibition is not worked out here (``inhibitedBy`` is always empty;
decide's decision record says when an alert was inhibited), and an alert appears once the projector has
stored its event.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streams.ingest.audit_reads import AUDIT_READS, filter_matchers, iso_ms, read_scope, readable_orgs
from streams.ingest.errors import BadRequest
from streams.model.matchers import Matcher, MatcherError, make_matcher, matches_all, parse_matcher

NO_END = "0001-01-01T00:00:00.000Z"
ROUTES = ("alerts-list",)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "true").lower()
    if raw not in ("true", "false"):
        raise BadRequest(name, f"expected true or false, got {raw!r}")
    return raw == "true"


def alert_labels(stored: dict[str, Any]) -> dict[str, str]:
    """The alert's labels with its ``org`` (what silences and inhibit rules match it by)."""
    return {**stored["labels"], "org": stored["labels"].get("org", stored["org"])}


def gettable_alert(stored: dict[str, Any], silenced_by: list[str]) -> dict[str, Any]:
    """A firing alert of the store (:func:`streams.audit.queries.firing_alerts`) as Alertmanager's GettableAlert."""
    received = stored["received_at"]
    starts = stored["starts_at"] if isinstance(stored["starts_at"], int) else received
    # no end (an Alertmanager webhook's firing alert: its Alertmanager sends the resolve): Go's zero time, as
    # Alertmanager writes it for such an alert
    ends = iso_ms(stored["ends_at"]) if isinstance(stored["ends_at"], int) else NO_END
    return {
        "labels": alert_labels(stored),
        "annotations": stored["annotations"],
        "startsAt": iso_ms(starts),
        "endsAt": ends,
        "updatedAt": iso_ms(received),
        "fingerprint": stored["fingerprint"],
        "receivers": [{"name": name} for name in stored["receivers"]],
        "status": {
            "state": "suppressed" if silenced_by else "active",
            "silencedBy": silenced_by,
            "inhibitedBy": [],
        },
        "generatorURL": stored["generator_url"],
    }


def active_matchers(silences: list[dict[str, Any]]) -> list[tuple[str, tuple[Matcher, ...]]]:
    """(id, matchers) of the active silences of :func:`streams.audit.queries.list_silences`, parsed once per
    listing rather than once per alert (a regex matcher compiles)."""
    return [(s["id"], tuple(map(parse_matcher, s["matchers"]))) for s in silences if s["state"] == "active"]


def muting(active: list[tuple[str, tuple[Matcher, ...]]], labels: dict[str, str]) -> list[str]:
    """The ids of the active silences (:func:`active_matchers`) that mute ``labels``: all of them, as
    Alertmanager's ``silencedBy`` lists them."""
    return [sid for sid, matchers in active if matches_all(matchers, labels)]


async def get_alerts(request: web.Request) -> web.Response:
    scope = read_scope(request, "alerts")
    active, silenced = _flag(request, "active"), _flag(request, "silenced")
    for name in ("inhibited", "unprocessed"):
        _flag(request, name)  # checked; no alert here is inhibited or unprocessed
    filters = filter_matchers(request)
    receiver = None
    if "receiver" in request.query:
        try:
            receiver = make_matcher("receiver", "=~", request.query["receiver"])
        except MatcherError as exc:
            raise BadRequest("receiver", str(exc)) from None
    reads = request.app[AUDIT_READS]
    orgs = readable_orgs(scope)
    stored = await reads.alerts(orgs)
    active_silences = active_matchers(await reads.silences(None)) if stored else []
    out = []
    for alert in stored:
        labels = alert_labels(alert)
        if not matches_all(filters, labels):
            continue
        if receiver is not None and not any(receiver.matches({"receiver": r}) for r in alert["receivers"]):
            continue
        by = muting(active_silences, labels)
        if silenced if by else active:
            out.append(gettable_alert(alert, by))
    return web.json_response(sorted(out, key=lambda a: a["fingerprint"]))


def register(app: web.Application) -> None:
    app.router.add_get("/api/v2/alerts", get_alerts, name="alerts-list")
