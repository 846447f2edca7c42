"""The generic envelope in: ``POST /ingest/events``, for anything without its own endpoint.

The body is one opsloop event envelope (see ``schemas/opsloop.Event.avsc``) or an
array of them. Versus ``opsloop produce`` (which trusts its file), a post:

* may leave out ``session_key``: the session rules derive it (and name the rule);
* gets ``received_at`` from ingest's clock;
* gets ``event_id = derived_id("client", org, id)`` from its ``event_id`` or the
  ``Idempotency-Key`` header (``<key>#<position>`` for the items of an array), so a
  retry is a duplicate, and one org's ids cannot collide with another's; with
  neither, a random id (no idempotency);
* has its payload checked against the record of its kind (Telemetry, Webhook,
  Timer, Scan), field by field, so a wrong type is a 400 naming the field rather
  than an encode failure later.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from fastavro.validation import ValidationError, validate

from streams.ingest.errors import BadRequest
from streams.ingest.fields import array, index, join, obj, parse_json
from streams.ingest.pipeline import INGEST, check_bounds, now
from streams.ingest.sessions import SessionRule, make_facts, session_key
from streams.kafka.catalogue import EVENT_KINDS
from streams.kafka.codec import Codec
from streams.model.records import PAYLOAD_FIELD_BY_KIND, InvalidEventError, derived_id, validate_event

RECORD_BY_KIND = {
    "telemetry": "opsloop.Telemetry",
    "webhook": "opsloop.Webhook",
    "timer": "opsloop.Timer",
    "scan": "opsloop.Scan",
}
_PATH_OF_RECORD = {"opsloop.Finding": "payload.findings[]"}
_MISSING_FIELD = re.compile(r"Field\(([\w.]+)\.(\w+)\) is None expected (.+)")
_WRONG_TYPE = re.compile(r"([\w.]+)\.(\w+) is <(.*)> of type <class '(\w+)'> expected (.+)", re.S)


@functools.lru_cache(maxsize=4)
def payload_schemas(codec: Codec) -> dict[str, dict[str, Any]]:
    """kind → the parsed Avro record its payload must fit (taken from the Event schema itself; once per codec)."""
    event = codec.current("opsloop.Event").parsed
    union = next(f["type"] for f in event["fields"] if f["name"] == "payload")
    records = {r["name"]: r for r in union if isinstance(r, dict)}
    return {kind: records[name] for kind, name in RECORD_BY_KIND.items()}


def check_payload(payload: Any, kind: str, schemas: Mapping[str, dict[str, Any]], path: str) -> None:
    if payload is None:
        return
    record = schemas[kind]
    payload = obj(payload, join(path, "payload"))
    known = {f["name"] for f in record["fields"]}
    for name in payload:
        if name not in known:
            raise BadRequest(
                join(path, f"payload.{name}"), f"unknown field for a {kind} payload; fields: {', '.join(sorted(known))}"
            )
    try:
        validate(dict(payload), record, raise_errors=True)
    except ValidationError as exc:
        raise BadRequest(*_describe(exc, record, path)) from None


_AVRO_WORDS = {
    "string": "a string",
    "long": "an integer",
    "int": "an integer",
    "double": "a number",
    "float": "a number",
    "boolean": "a boolean",
    "null": "null",
    "map": "a mapping of strings",
    "array": "an array",
    "record": "an object",
}


def _avro_words(avro_type: Any) -> str:
    """``["null", "double"]`` → ``a number or null``: what a client should have sent."""
    if isinstance(avro_type, list):
        return " or ".join(_avro_words(t) for t in sorted(avro_type, key=lambda t: t == "null"))
    if isinstance(avro_type, dict):
        return _AVRO_WORDS.get(avro_type.get("type", ""), "an object")
    return _AVRO_WORDS.get(avro_type, str(avro_type))


def _declared(record: Mapping[str, Any], name: str) -> str:
    """The declared type of field ``name`` in ``record`` or in a record nested in it (findings items)."""
    for f in record["fields"]:
        if f["name"] == name:
            return _avro_words(f["type"])
    for f in record["fields"]:
        items = f["type"].get("items") if isinstance(f["type"], dict) else None
        if isinstance(items, dict) and items.get("type") == "record":
            found = _declared(items, name)
            if found:
                return found
    return ""


def _describe(exc: ValidationError, record: Mapping[str, Any], path: str) -> tuple[str, str]:
    message = str(exc.errors[0]) if getattr(exc, "errors", None) else str(exc)
    if m := _MISSING_FIELD.match(message):
        owner, field, _expected = m.groups()
        return join(path, f"{_PATH_OF_RECORD.get(owner, 'payload')}.{field}"), f"required ({_declared(record, field)})"
    if m := _WRONG_TYPE.match(message):
        owner, field, _value, got, _expected = m.groups()
        got = _AVRO_WORDS.get(
            {
                "str": "string",
                "int": "long",
                "float": "double",
                "bool": "boolean",
                "dict": "map",
                "list": "array",
                "NoneType": "null",
            }.get(got, got),
            got,
        )
        return join(
            path, f"{_PATH_OF_RECORD.get(owner, 'payload')}.{field}"
        ), f"expected {_declared(record, field)}, got {got}"
    return join(path, "payload"), message[:200]


def _facts(raw: Mapping[str, Any], org: str) -> dict[str, str]:
    labels = raw.get("labels")
    labels = {k: v for k, v in labels.items() if isinstance(v, str)} if isinstance(labels, Mapping) else {}
    payload = raw.get("payload")
    if not isinstance(payload, Mapping):
        payload = {}
    extras = {
        name: payload.get(name)
        for name in ("fingerprint", "subject", "config_id", "scan_type")
        if isinstance(payload.get(name), str)
    }
    return make_facts(
        org=org,
        kind=str(raw.get("kind") or ""),
        type=str(raw.get("type") or ""),
        source=str(raw.get("source") or ""),
        labels=labels,
        **extras,
    )


def envelope_events(
    body: Any,
    *,
    org: str,
    received_at: int,
    rules: Sequence[SessionRule],
    schemas: Mapping[str, dict[str, Any]],
    idempotency_key: str | None = None,
) -> list[dict[str, Any]]:
    many = isinstance(body, list)
    items = array(body, "events", nonempty=True) if many else [obj(body, "body")]
    events = []
    for i, raw in enumerate(items):
        path = index("events", i) if many else ""
        raw = obj(raw, path)
        event = dict(raw)
        kind = raw.get("kind")
        if kind in (None, ""):
            raise BadRequest(join(path, "kind"), f"required; one of {', '.join(EVENT_KINDS)}")
        if kind not in EVENT_KINDS:
            raise BadRequest(
                join(path, "kind"), f"unknown kind {str(kind)[:40]!r}; expected one of {', '.join(EVENT_KINDS)}"
            )
        event_org = raw.get("org") or org
        if not isinstance(event_org, str):
            raise BadRequest(join(path, "org"), "expected a string")
        event["org"] = event_org
        if raw.get("payload") is not None:
            marker = PAYLOAD_FIELD_BY_KIND[kind]
            if isinstance(raw["payload"], Mapping) and kind != "telemetry" and marker not in raw["payload"]:
                raise BadRequest(join(path, f"payload.{marker}"), f"required for a {kind} event")
            check_payload(raw["payload"], kind, schemas, path)
        if not raw.get("session_key"):
            try:
                key, rule = _derive_session(rules, _facts(raw, event_org), path)
            except BadRequest:
                # what is wrong with the envelope itself comes first: no session rule applies to an event
                # without a type, and "session_key: required" named the wrong field
                envelope_errors_first({**event, "session_key": f"{event_org}:-"}, path)
                raise
            event["session_key"], event["session_rule"] = key, rule
        else:
            _check_session_org(raw["session_key"], event_org, path)
            if not raw.get("session_rule"):
                event["session_rule"] = "client"
        client_id = raw.get("event_id")
        if client_id is not None and not isinstance(client_id, str):
            raise BadRequest(join(path, "event_id"), "expected a string")
        if not client_id and idempotency_key:
            client_id = f"{idempotency_key}#{i}" if many else idempotency_key
        event["event_id"] = derived_id("client", event_org, client_id) if client_id else uuid.uuid4().hex
        event["received_at"] = received_at
        events.append(event)
    return events


def _check_session_org(key: Any, org: str, path: str) -> None:
    """A session key the client gives must be of the event's org (``<org>:...``), as every session rule's is.

    Why: a session's state is found by its key alone, so a token of org ``a`` posting ``session_key:
    "b:alert:DiskFull:db"`` (org ``a``, which its scope allows) acknowledged, resolved or added alerts to org
    ``b``'s incident.
    """
    if isinstance(key, str) and key.startswith(f"{org}:"):
        return
    shown = repr(key[:80]) if isinstance(key, str) else type(key).__name__
    raise BadRequest(
        join(path, "session_key"), f"{shown} is not a session of org {org[:80]!r}: it must start with '{org[:80]}:'"
    )


def envelope_errors_first(event: Mapping[str, Any], path: str) -> None:
    """400 naming the first field of ``event`` (a session key filled in) that ingest would refuse anyway."""
    check_bounds(event, path)
    try:
        validate_event(event)
    except InvalidEventError as exc:
        raise BadRequest(join(path, exc.field), exc.reason) from None


def _derive_session(rules: Sequence[SessionRule], facts: Mapping[str, str], path: str) -> tuple[str, str]:
    try:
        return session_key(rules, facts)
    except LookupError as exc:
        raise BadRequest(join(path, "session_key"), f"required: {exc}") from None


async def post_events(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    ingest.check_length(request)
    principal = ingest.authenticate(request)
    body = parse_json(await ingest.read_body(request))
    events = envelope_events(
        body,
        org=ingest.org(request, principal),
        received_at=now(),
        rules=ingest.rules,
        schemas=payload_schemas(ingest.codec),
        idempotency_key=request.headers.get("Idempotency-Key") or None,
    )
    many = isinstance(body, list)
    finished = [ingest.finish(e, index("events", i) if many else "", principal=principal) for i, e in enumerate(events)]
    return await ingest.accept(finished, "events")
