"""Alerts in: Prometheus's push (``POST /api/v2/alerts``) and Alertmanager's webhook (v4).

Prometheus can list opsloop as its alertmanager; Alertmanager can list it as a
webhook receiver. Each alert becomes one telemetry event:

* ``event_id = derived_id("alert", org, fingerprint, startsAt, status)``, plus endsAt
  for a firing alert of Prometheus's push. Prometheus re-sends a firing alert every
  resend delay with the same startsAt and an endsAt moved on; each re-send is an event
  (decide folds it as a ``repeat``: no notification) because it moves the time at
  which the alert resolves by itself when its sender stops re-sending it (endsAt, as in
  Alertmanager). A retry of one post keeps its id and is answered ``duplicate``;
  decide skips ids a session has seen across restarts.
* The fingerprint is Alertmanager's (FNV-1a 64 over the sorted label set), taken
  from the webhook when it carries one, computed otherwise, so the same alert has
  the same fingerprint whichever way it arrives.
* Prometheus's push: no endsAt, or an endsAt after ingest's receive time, means
  firing; an endsAt in the past means resolved. Alertmanager says which in
  ``status``.
* ``occurred_at`` is startsAt for a firing alert and endsAt for a resolved one.
* The org is the alert's ``org`` label, else ``?org=`` on the URL, else the default.

The parsers are pure (body and clock in, events out); the two views at the bottom
are the I/O shell.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from streams.ingest.errors import BadRequest, IngestError, PayloadTooLarge
from streams.ingest.fields import array, index, join, obj, parse_json, string, string_map, timestamp_ms
from streams.ingest.pipeline import INGEST, Ingest, now
from streams.ingest.publisher import Ready
from streams.ingest.scopes import Principal
from streams.ingest.sessions import SessionRule, make_facts, session_key
from streams.model.records import POST_ANNOTATION, derived_id

log = logging.getLogger(__name__)

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = 0xFFFFFFFFFFFFFFFF
_SEPARATOR = 0xFF


# Label sets remembered with their fingerprint, and the largest remembered (characters of names and values):
# at most ~8,192 × 1 KB of strings held, whatever a producer sends (a value may be 4,096 characters).
FINGERPRINTS_KEPT = 8192
FINGERPRINT_KEPT_UP_TO = 1024


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint (prometheus/common ``LabelSet.Fingerprint``), as 16 hex digits."""
    items = tuple(sorted(labels.items()))  # code-point order == Go's byte order for UTF-8
    if sum(len(name) + len(value) for name, value in items) > FINGERPRINT_KEPT_UP_TO:
        return _fnv(items)
    return _remembered(items)


def _fnv(items: tuple[tuple[str, str], ...]) -> str:
    """FNV-1a over the sorted pairs, byte by byte in Python: ~30 µs for a dozen labels. Prometheus re-sends every
    firing alert each evaluation, so the label sets seen recently are remembered (:func:`_remembered`)."""
    h = _FNV_OFFSET
    for name, value in items:
        for part in (name, value):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


_remembered = functools.lru_cache(maxsize=FINGERPRINTS_KEPT)(_fnv)


def alert_event(
    *,
    org: str,
    source: str,
    status: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    starts_at: int,
    ends_at: int | None,
    generator_url: str,
    fp: str,
    received_at: int,
    rules: Sequence[SessionRule],
    path: str,
) -> dict[str, Any]:
    event_type = f"alert.{status}"
    facts = make_facts(org=org, kind="telemetry", type=event_type, source=source, labels=labels, fingerprint=fp)
    try:
        key, rule = session_key(rules, facts)
    except LookupError as exc:
        raise BadRequest(join(path, "labels"), f"no session rule applies: {exc}") from None
    return {
        "event_id": derived_id(
            "alert",
            org,
            fp,
            str(starts_at),
            status,
            *((str(ends_at),) if source == "prometheus" and status == "firing" and ends_at else ()),
            # Alertmanager's webhook sends an alert again with its annotations as they read now ("fsync durations
            # are 0.7s"): a new event, so the next message says it (as the same text is a duplicate, dropped)
            *((_text_digest(annotations),) if source != "prometheus" and status == "firing" and annotations else ()),
        ),
        "session_key": key,
        "session_rule": rule,
        "kind": "telemetry",
        "type": event_type,
        "source": source,
        "org": org,
        "occurred_at": ends_at if status == "resolved" and ends_at is not None else starts_at,
        "received_at": received_at,
        "labels": labels,
        "annotations": annotations,
        "payload": {
            "status": status,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "generator_url": generator_url,
            "fingerprint": fp,
            "metric": None,
            "value": None,
        },
    }


def _text_digest(annotations: Mapping[str, str]) -> str:
    return derived_id("annotations", *(f"{k}={v}" for k, v in sorted(annotations.items())))


def _common(alert: Any, path: str) -> tuple[Mapping[str, Any], dict[str, str], dict[str, str], str]:
    alert = obj(alert, path)
    labels = string_map(alert.get("labels"), join(path, "labels"), required=True, nonempty=True)
    annotations = string_map(alert.get("annotations"), join(path, "annotations"), text=True)
    generator_url = string(alert, "generatorURL", path, required=False)
    return alert, labels, annotations, generator_url


def prometheus_events(
    body: Any, *, org: str, received_at: int, rules: Sequence[SessionRule], resolve_timeout_ms: int | None = None
) -> list[dict[str, Any]]:
    """Prometheus's ``POST /api/v2/alerts`` body (a JSON array of alerts) → events (the first bad alert raises)."""
    alerts = array(body, "alerts", nonempty=True)
    return [
        prometheus_event(
            raw,
            index("alerts", i),
            org=org,
            received_at=received_at,
            rules=rules,
            resolve_timeout_ms=resolve_timeout_ms,
        )
        for i, raw in enumerate(alerts)
    ]


def prometheus_event(
    raw: Any,
    path: str,
    *,
    org: str,
    received_at: int,
    rules: Sequence[SessionRule],
    resolve_timeout_ms: int | None = None,
) -> dict[str, Any]:
    """One alert of Prometheus's push → its event (BadRequest naming ``path``).

    An alert without ``endsAt`` ends ``resolve_timeout_ms`` after it arrived, when that is given (ingest
    gives it), as Alertmanager's ``resolve_timeout`` ends it: Prometheus always sends an end (four
    evaluation intervals ahead, moved on by every re-send), but ``amtool alert add`` and scripts do not,
    and such an alert stayed firing, and escalating, until someone resolved it by hand. The end is rounded
    up to a tenth of the timeout, so copies posted within that tenth keep one event id (a copy is answered
    ``duplicate``, not decided again) while a post after it moves the end on."""
    alert, labels, annotations, generator_url = _common(raw, path)
    starts_at = timestamp_ms(alert.get("startsAt"), join(path, "startsAt"))
    ends_at = timestamp_ms(alert.get("endsAt"), join(path, "endsAt"))
    if starts_at is None:  # Prometheus always sends it; other clients may not
        starts_at = received_at
    elif ends_at is not None and ends_at < starts_at:  # Alertmanager's API refuses it too
        raise BadRequest(join(path, "endsAt"), "before startsAt")
    if ends_at is None and resolve_timeout_ms is not None:
        step = max(1000, resolve_timeout_ms // 10)
        ends_at = -(-(max(received_at, starts_at) + resolve_timeout_ms) // step) * step
    status = "resolved" if ends_at is not None and ends_at <= received_at else "firing"
    return alert_event(
        org=labels.get("org") or org,
        source="prometheus",
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=generator_url,
        fp=fingerprint(labels),
        received_at=received_at,
        rules=rules,
        path=path,
    )


def alertmanager_events(body: Any, *, org: str, received_at: int, rules: Sequence[SessionRule]) -> list[dict[str, Any]]:
    """Alertmanager's webhook payload (version "4", or Grafana's "1") → one event per alert, firing or resolved
    (the first bad one raises)."""
    alerts, source = alertmanager_alerts(body)
    return [
        alertmanager_event(raw, index("alerts", i), org=org, received_at=received_at, rules=rules, source=source)
        for i, raw in enumerate(alerts)
    ]


def alertmanager_alerts(body: Any) -> tuple[list[Any], str]:
    """The alerts of a webhook payload and who sent it: Alertmanager's (version "4") or Grafana's (its
    alerting's webhook contact point: version "1" with an ``orgId``; the same alerts, with a dashboard and
    panel link each)."""
    body = obj(body, "body")
    version = body.get("version")
    if version == "1" and "orgId" in body:
        source = "grafana"
    elif version == "4":
        source = "alertmanager"
    else:
        raise BadRequest(
            "version",
            f'expected "4" (Alertmanager webhook payload version) or "1" with orgId (Grafana\'s), got {version!r}',
        )
    return array(body.get("alerts"), "alerts", nonempty=True), source


def alertmanager_event(
    raw: Any, path: str, *, org: str, received_at: int, rules: Sequence[SessionRule], source: str = "alertmanager"
) -> dict[str, Any]:
    """One alert of Alertmanager's (or Grafana's) webhook → its event (BadRequest naming ``path``)."""
    alert, labels, annotations, generator_url = _common(raw, path)
    if source == "grafana" and "dashboard_url" not in annotations:
        # Grafana gives each alert its panel's and dashboard's address: the link a message should carry
        link = string(alert, "panelURL", path, required=False) or string(alert, "dashboardURL", path, required=False)
        if link:
            annotations["dashboard_url"] = link
    status = string(alert, "status", path)
    if status not in ("firing", "resolved"):
        raise BadRequest(join(path, "status"), f"expected 'firing' or 'resolved', got {status!r}")
    starts_at = timestamp_ms(alert.get("startsAt"), join(path, "startsAt"), required=True)
    ends_at = timestamp_ms(alert.get("endsAt"), join(path, "endsAt"))
    if starts_at is None:
        raise BadRequest(join(path, "startsAt"), "required (got the zero time)")
    if status == "resolved" and ends_at is None:
        raise BadRequest(join(path, "endsAt"), "required for a resolved alert")
    fp = string(alert, "fingerprint", path, required=False) or fingerprint(labels)
    return alert_event(
        org=labels.get("org") or org,
        source=source,
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=generator_url,
        fp=fp,
        received_at=received_at,
        rules=rules,
        path=path,
    )


# -- views ---------------------------------------------------------------------------


def mark_posted_together(events: Sequence[dict[str, Any]], seen: Callable[[str], bool]) -> None:
    """Number the new alerts of each session in one Alertmanager webhook (annotation ``opsloop_post``: ``i/n``).

    Alertmanager delivers a group's alerts in one post, already waited for; decide told the first at once and
    the others 5 minutes later, as an update (a probe's CephOSDFlapping message named osd.1 alone). With the
    numbers, decide holds the message until the session's last alert of the post, then tells them together;
    were that one lost, the group's timer tells them at its next pass. A copy of an alert seen already (``seen``:
    ingest answers it ``duplicate``, nothing is produced) is not counted."""
    new = [e for e in events if not seen(str(e.get("event_id")))]
    totals = Counter(str(e.get("session_key")) for e in new)
    place: Counter[str] = Counter()
    for event in new:
        session = str(event.get("session_key"))
        place[session] += 1
        if totals[session] > 1:
            event["annotations"] = {
                **(event.get("annotations") or {}),
                POST_ANNOTATION: f"{place[session]}/{totals[session]}",
            }


async def best_effort(
    ingest: Ingest,
    alerts: Sequence[Any],
    parse: Callable[[Any, str], dict[str, Any]],
    principal: Principal,
    endpoint: str,
    *,
    together: bool = False,
) -> web.Response:
    """Take every alert of a post that is valid; a 400 names the others, with what was taken (``together``: the
    post is one notification's worth, :func:`mark_posted_together`).

    Why: Prometheus and Alertmanager do not retry a 4xx, so one bad alert refusing the post lost every
    other alert in it (up to 64 in one Prometheus push). Alertmanager's own API does the same: "a best
    effort to insert all alerts that are valid", then 400 with the errors. An alert that is refused is
    one that is malformed (400) or too large (413); a token not allowed an alert's org still refuses the
    whole post (403), and nothing is taken when no alert is valid.
    """
    ready: list[Ready] = []
    refused: list[IngestError] = []
    parsed: list[tuple[str, dict[str, Any]]] = []
    for i, raw in enumerate(alerts):
        path = index("alerts", i)
        try:
            parsed.append((path, parse(raw, path)))
        except (BadRequest, PayloadTooLarge) as exc:
            refused.append(exc)
    if together:
        mark_posted_together([event for _, event in parsed], ingest.recent.__contains__)
    for path, event in parsed:
        try:
            ready.append(ingest.finish(event, path, principal=principal))
        except (BadRequest, PayloadTooLarge) as exc:
            refused.append(exc)
    if not ready:
        raise refused[0]
    body = await ingest.take(ready, endpoint)
    if not refused:
        return web.json_response(body)
    ingest.metrics.events.labels(endpoint, "refused").inc(len(refused))
    more = f" (and {len(refused) - 1} more alerts refused)" if len(refused) > 1 else ""
    return web.json_response(
        {"error": refused[0].reason + more, "refused": [e.reason for e in refused], **body}, status=400
    )


async def post_prometheus_alerts(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    ingest.check_length(request)
    principal = ingest.authenticate(request)
    body = await ingest.read_body(request)
    received_at, org = now(), ingest.org(request, principal)
    resolve_timeout_ms = int(ingest.config.resolve_timeout_s * 1000)
    alerts = array(parse_json(body), "alerts", nonempty=True)

    def parse(raw: Any, path: str) -> dict[str, Any]:
        return prometheus_event(
            raw, path, org=org, received_at=received_at, rules=ingest.rules, resolve_timeout_ms=resolve_timeout_ms
        )

    return await best_effort(ingest, alerts, parse, principal, "prometheus")


async def post_alertmanager_webhook(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    ingest.check_length(request)
    principal = ingest.authenticate(request)
    body = await ingest.read_body(request)
    received_at, org = now(), ingest.org(request, principal)
    payload = parse_json(body)
    alerts, source = alertmanager_alerts(payload)
    truncated = payload.get("truncatedAlerts")
    if isinstance(truncated, int) and truncated > 0:  # the receiver's max_alerts cut the group: say so, once per post
        log.warning(
            "Alertmanager truncated %d alerts of group %s (raise max_alerts on the webhook)",
            truncated,
            str(payload.get("groupKey", ""))[:200],
        )

    def parse(raw: Any, path: str) -> dict[str, Any]:
        return alertmanager_event(raw, path, org=org, received_at=received_at, rules=ingest.rules, source=source)

    return await best_effort(ingest, alerts, parse, principal, "alertmanager", together=True)
