"""PagerDuty Events API v2 (``/v2/enqueue``): trigger, acknowledge and resolve one incident.

The dedup_key is what makes one incident out of many events: it is the notify's
thread_key (or the session key), stable for the incident; keys over PagerDuty's 255
characters are replaced by a deterministic hash, so every worker and every replay
computes the same one. Because PagerDuty deduplicates on it, a resend after an
unknown outcome is harmless: this sink is idempotent. 202 is accepted, 400 is final,
429 and 5xx are retried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from agents.sinks.base import Channel, HttpRequest, HttpResponse, PermanentError, check_status, notify_of, trim
from streams.model.receivers import ChannelSpec, RateLimit, Receiver

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
DEDUP_MAX = 255
SUMMARY_MAX = 1024
SOURCE_MAX = 255
SEVERITY = {"urgent": "critical", "action": "error", "warning": "warning", "info": "info"}
ACTIONS = ("trigger", "acknowledge", "resolve")


def dedup_key(effect: Mapping[str, Any]) -> str:
    n = notify_of(effect)
    key: str = n.get("thread_key") or effect["session_key"]
    if len(key) <= DEDUP_MAX:
        return key
    return f"opsloop-sha256-{hashlib.sha256(key.encode()).hexdigest()}"


def build_event(effect: Mapping[str, Any], receiver: Receiver, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body (pure)."""
    n = notify_of(effect)
    action = n.get("action") or "trigger"
    if action not in ACTIONS:
        raise PermanentError(f"PagerDuty has no event_action {action!r}")
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key(effect)}
    if action != "trigger":
        return event  # acknowledge / resolve need only the key of the incident
    fields = dict(n.get("fields") or {})
    source = fields.get("instance") or fields.get("source") or receiver.setting("source") or "opsloop"
    details: dict[str, Any] = {**fields, "session_key": effect["session_key"], "effect_id": effect["effect_id"]}
    if n.get("body"):
        details["body"] = n["body"]
    if effect.get("runbook"):
        details["runbook"] = effect["runbook"]
    event["payload"] = {
        # PagerDuty refuses an empty summary (400, dead-lettered): a title of only spaces says nothing either
        "summary": trim(n["title"].strip() or f"opsloop: {effect['session_key']}", SUMMARY_MAX),
        "source": trim(source, SOURCE_MAX),
        "severity": SEVERITY.get(n["severity"], "warning"),
        "timestamp": _iso(effect["created_at"]),
        "component": fields.get("service", fields.get("job", "")) or None,
        "group": fields.get("namespace") or None,
        "class": fields.get("category") or None,
        "custom_details": details,
    }
    event["payload"] = {k: v for k, v in event["payload"].items() if v is not None}
    event["client"] = receiver.setting("client", "opsloop")
    if n.get("links"):
        event["links"] = [{"href": link["url"], "text": link["label"]} for link in n["links"]]
    return event


def _iso(ms: int) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(effect: Mapping[str, Any], receiver: Receiver, secrets: Mapping[str, str]) -> HttpRequest:
    body = json.dumps(build_event(effect, receiver, secrets["routing_key"]), ensure_ascii=False).encode()
    return HttpRequest(
        url=receiver.setting("url", DEFAULT_URL), body=body, headers={"content-type": "application/json"}
    )


def check(response: HttpResponse) -> None:
    if response.status == 400:
        raise PermanentError(f"PagerDuty rejected the event (400): {response.text[:300]}", http_status=400)
    check_status(response)
    try:
        answer = json.loads(response.text or "{}")
    except ValueError:
        answer = {}
    if response.status != 202 or answer.get("status") != "success":
        raise PermanentError(
            f"PagerDuty answered {response.status} {response.text[:200]!r}, not 202 success",
            http_status=response.status,
        )


# The default rate follows PagerDuty's documented limit: about 120 events per minute per routing key.
SPEC = ChannelSpec(
    required=("routing_key",),
    secret_only=("routing_key",),
    optional=("url", "source", "client"),
    default_rate=RateLimit(120, 60.0),
)

CHANNEL = Channel(name="pagerduty", spec=SPEC, render=render, check=check, idempotent=True)
