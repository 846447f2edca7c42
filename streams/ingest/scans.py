"""Scan results in: ``POST /ingest/scan`` (drift, compliance, cost), clean scans included.

Body::

    {"scan_id": "run-812", "scan_type": "drift", "config_id": "prod-vpc",
     "status": "findings",                        # optional: clean | findings | failed
     "completed_at": "2024-05-01T10:00:00Z",      # optional: RFC 3339 or epoch ms
     "source": "driftctl",                        # optional, default "scanner"
     "labels": {"team": "net"},                   # optional
     "findings": [{"resource": "aws_security_group.web", "change_type": "modified",
                   "rule": "", "severity": "high", "detail": "ingress 0.0.0.0/0 added"}]}

A clean scan is one with no findings; it is an event too (decide resolves on it).
Every scan of one config shares a session. The event id derives from ``scan_id``
(or the Idempotency-Key header), so a retried post is a duplicate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from streams.ingest.errors import BadRequest
from streams.ingest.fields import array, index, obj, parse_json, string, string_map, timestamp_ms
from streams.ingest.pipeline import INGEST, now
from streams.ingest.sessions import SessionRule, make_facts, session_key
from streams.model.records import derived_id

SCAN_TYPES = ("drift", "compliance", "cost")
SCAN_STATUSES = ("clean", "findings", "failed")
FINDING_TEXT_FIELDS = ("change_type", "rule", "severity", "detail")


def finding(raw: Any, path: str) -> dict[str, str]:
    item = obj(raw, path)
    out = {"resource": string(item, "resource", path)}
    for name in FINDING_TEXT_FIELDS:
        out[name] = string(item, name, path, required=False)
    if not out["change_type"] and not out["rule"]:
        raise BadRequest(path, "a finding needs a change_type (drift) or a rule (compliance, cost)")
    return out


def scan_event(
    body: Any, *, org: str, received_at: int, rules: Sequence[SessionRule], idempotency_key: str | None = None
) -> dict[str, Any]:
    body = obj(body, "body")
    scan_type = string(body, "scan_type", "")
    if scan_type not in SCAN_TYPES:
        raise BadRequest("scan_type", f"expected one of {', '.join(SCAN_TYPES)}, got {scan_type[:40]!r}")
    config_id = string(body, "config_id", "")
    findings = [finding(f, index("findings", i)) for i, f in enumerate(array(body.get("findings", []), "findings"))]
    status = string(body, "status", "", required=False) or ("findings" if findings else "clean")
    if status not in SCAN_STATUSES:
        raise BadRequest("status", f"expected one of {', '.join(SCAN_STATUSES)}, got {status[:40]!r}")
    if status == "clean" and findings:
        raise BadRequest("status", f"'clean' but {len(findings)} findings were sent")
    client_id = string(body, "scan_id", "", required=False) or idempotency_key
    scan_id = client_id or uuid.uuid4().hex
    org = string(body, "org", "", required=False) or org
    occurred_at = timestamp_ms(body.get("completed_at"), "completed_at", allow_millis=True) or received_at
    labels = string_map(body.get("labels"), "labels")
    labels.update({"scan_type": scan_type, "config_id": config_id, "status": status})
    if findings:
        worst = [f["severity"] for f in findings if f["severity"]]
        labels["findings"] = str(len(findings))
        if worst:
            labels.setdefault("severity", _worst(worst))
    event_type = "scan.completed"
    source = string(body, "source", "", required=False) or "scanner"
    facts = make_facts(
        org=org, kind="scan", type=event_type, source=source, labels=labels, config_id=config_id, scan_type=scan_type
    )
    try:
        key, rule = session_key(rules, facts)
    except LookupError as exc:
        raise BadRequest("config_id", f"no session rule applies: {exc}") from None
    return {
        "event_id": derived_id("scan", org, scan_id) if client_id else scan_id,
        "session_key": key,
        "session_rule": rule,
        "kind": "scan",
        "type": event_type,
        "source": source,
        "org": org,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "labels": labels,
        "annotations": string_map(body.get("annotations"), "annotations", text=True),
        "payload": {
            "scan_id": scan_id,
            "scan_type": scan_type,
            "config_id": config_id,
            "status": status,
            "findings": findings,
        },
    }


_SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")


def _worst(severities: list[str]) -> str:
    ranked = sorted(
        severities,
        key=lambda s: _SEVERITY_ORDER.index(s.lower()) if s.lower() in _SEVERITY_ORDER else len(_SEVERITY_ORDER),
    )
    return ranked[0]


async def post_scan(request: web.Request) -> web.Response:
    ingest = request.app[INGEST]
    ingest.check_length(request)
    principal = ingest.authenticate(request)
    body = parse_json(await ingest.read_body(request))
    event = scan_event(
        body,
        org=ingest.org(request, principal),
        received_at=now(),
        rules=ingest.rules,
        idempotency_key=request.headers.get("Idempotency-Key") or None,
    )
    return await ingest.accept([ingest.finish(event, principal=principal)], "scan")
