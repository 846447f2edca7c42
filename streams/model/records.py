"""Building and validating the records that go on opsloop topics.

Validation is pure and names the field at fault (``InvalidEventError("labels:
expected a mapping of strings")``) so ingest can answer 400 with the reason and the
CLI can print file:line. Stamping an event with an id and a receive time is the only
impure step and takes both as arguments.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams.errors import InvalidInputError

EVENT_KINDS = ("telemetry", "webhook", "timer", "scan")
EVENT_TOPICS = tuple(f"events.{kind}" for kind in EVENT_KINDS)
PAYLOAD_FIELD_BY_KIND = {"telemetry": "status", "webhook": "provider", "timer": "timer_id", "scan": "scan_id"}
REQUIRED_EVENT_FIELDS = ("session_key", "kind", "type", "source", "occurred_at")
# C0 controls and DEL: refused in identifiers, label names and request paths (a NUL reaches no database).
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# The annotation ingest numbers the alerts of one session in one Alertmanager webhook with ("2/3"): decide tells
# them in one message, at the last (streams.ingest.alerts.mark_posted_together, streams.core.grouping).
POST_ANNOTATION = "opsloop_post"
# In any text: no database stores a NUL (PostgreSQL's JSONB and text refuse it) and no codec a lone surrogate.
UNSTORABLE_CHARS = re.compile(r"[\x00\ud800-\udfff]")


def unstorable_char_name(char: str) -> str:
    return "a NUL character" if char == "\x00" else f"a lone surrogate \\u{ord(char):04x}"


class InvalidEventError(InvalidInputError, ValueError):
    """An event does not fit the envelope; ``field`` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def check_org_name(org: str) -> None:
    """InvalidEventError (field ``org``) for a name no org may have.

    Every session key is ``<org>:...`` and a session is found by its key alone, so an org named
    ``acme:alert`` would own org ``acme``'s sessions ``acme:alert:...``.
    """
    if ":" in org:
        raise InvalidEventError("org", f"{org[:128]!r} contains ':', which separates a session key's org")


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEventError(field, "expected a mapping of strings")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            raise InvalidEventError(f"{field}.{k}", "expected a string value")
        out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return out


# 9999-12-31T23:59:59.999Z: the last instant a calendar (Python's datetime, RFC 3339) can name. A time past
# it would decode from Avro and then fail wherever it is shown or bucketed into a day (the digest crashed on one).
MAX_TIME_MS = 253_402_300_799_999


def _millis(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEventError(field, f"expected epoch milliseconds (a non-negative integer), got {value!r}")
    if value > MAX_TIME_MS:
        raise InvalidEventError(field, f"{value} is past the year 9999 (epoch milliseconds expected)")
    return value


def utc_text(ms: float) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SS`` (UTC), the one way pages, timelines and the CLI show a time.
    A value no calendar can name (written before times were checked) is shown as itself, never an error."""
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return f"{ms} ms"


def check_envelope(event: Mapping[str, Any]) -> None:
    """The checks of :func:`validate_event` that an event decoded from Kafka can still fail (Avro holds any
    string and any long, and any producer may write the topic): a session key, a kind, and times a calendar can name.
    Raises InvalidEventError naming the field (decide and the projector dead-letter the record with it)."""
    session = event.get("session_key")
    if not isinstance(session, str) or not session:
        raise InvalidEventError("session_key", "required")
    kind = event.get("kind")
    if kind not in EVENT_KINDS:  # ingest refuses one; read from Kafka it was decided with rules for no kind
        raise InvalidEventError("kind", f"unknown kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
    for field in ("occurred_at", "received_at"):
        _millis(event.get(field, 0), field)


def check_keyed(key: bytes | None, event: Mapping[str, Any]) -> None:
    """InvalidEventError when an event's Kafka key names another session than its own.

    Every producer keys an event by its session, so a session's events share one partition and its
    state one table partition. A record keyed otherwise sits on another session's partition: decided
    there, it started its session afresh beside the real one (a second episode, its timers twice).
    A record without a key is left to the envelope's checks (older tools wrote such records)."""
    if key is not None and key != str(event.get("session_key") or "").encode():
        shown = key[:80].decode("utf-8", "replace")
        raise InvalidEventError("session_key", f"the record is keyed {shown!r}, not by its session key")


def check_read_event(key: bytes | None, event: Mapping[str, Any]) -> None:
    """What decide dead-letters of an event read from Kafka (its key, then its envelope), for the readers
    that must agree with it: the projector keeps such a record out of the audit, replay does not replay it."""
    check_keyed(key, event)
    check_envelope(event)


def validate_event(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check an event envelope and return it normalised to the Avro shape (without stamping)."""
    if not isinstance(raw, Mapping):
        raise InvalidEventError("event", "expected a JSON object")
    for field in REQUIRED_EVENT_FIELDS:
        if field not in raw or raw[field] in (None, ""):
            raise InvalidEventError(field, "required")
    kind = raw["kind"]
    if kind not in EVENT_KINDS:
        raise InvalidEventError("kind", f"unknown kind {kind!r}; expected one of {', '.join(EVENT_KINDS)}")
    for field in ("session_key", "type", "source"):
        if not isinstance(raw[field], str):
            raise InvalidEventError(field, "expected a string")
    event: dict[str, Any] = {
        "event_id": raw.get("event_id") or "",
        "session_key": raw["session_key"],
        "session_rule": str(raw.get("session_rule") or ""),
        "kind": kind,
        "type": raw["type"],
        "source": raw["source"],
        "org": str(raw.get("org") or "default"),
        "occurred_at": _millis(raw["occurred_at"], "occurred_at"),
        "received_at": _millis(raw.get("received_at", 0) or 0, "received_at"),
        "labels": _string_map(raw.get("labels"), "labels"),
        "annotations": _string_map(raw.get("annotations"), "annotations"),
        "payload": None,
    }
    if not isinstance(event["event_id"], str):
        raise InvalidEventError("event_id", "expected a string")
    payload = raw.get("payload")
    if payload is not None:
        if not isinstance(payload, Mapping):
            raise InvalidEventError("payload", "expected an object")
        marker = PAYLOAD_FIELD_BY_KIND[kind]
        if kind != "telemetry" and marker not in payload:
            raise InvalidEventError(f"payload.{marker}", f"required for a {kind} event")
        event["payload"] = dict(payload)
    return event


def stamp(event: dict[str, Any], *, event_id: str, received_at: int) -> dict[str, Any]:
    """Fill the id and receive time an accepting producer owns; keeps a client-supplied id."""
    return {**event, "event_id": event["event_id"] or event_id, "received_at": event["received_at"] or received_at}


def derived_id(*parts: str) -> str:
    """A deterministic id from its parts: same inputs, same id, on every worker and in replay."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:32]


def topic_for(event: Mapping[str, Any]) -> str:
    return f"events.{event['kind']}"
