"""Hand-labelled non-alert events (classifier/data/examples.yaml), expanded into events.

The YAML stays compact and readable; this module turns each entry into the envelope
the ingest would produce (webhook bodies serialised into ``body_json``), so the
classifier trains on exactly the shape it will see in production.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.errors import InvalidInputError
from streams.model.taxonomy import CATEGORIES, SEVERITIES

EXAMPLES_PATH = Path(__file__).resolve().parent / "data" / "examples.yaml"
_BASE_TIME = 1_700_000_000_000


class ExampleFormatError(InvalidInputError, ValueError):
    """An entry of examples.yaml is malformed; the message names the entry."""


@dataclass(frozen=True)
class LabelledExample:
    """One hand-labelled event with its split unit (service) and family (group)."""

    id: str
    group: str
    service: str
    category: str
    severity: str
    event: dict[str, Any]


def _envelope(entry_id: str, kind: str, type_: str, source: str, n: int) -> dict[str, Any]:
    digest = hashlib.sha256(entry_id.encode()).hexdigest()
    at = _BASE_TIME + n * 60_000
    return {
        "event_id": f"ex-{digest[:20]}",
        "session_key": f"acme:{kind}:{digest[:12]}",
        "kind": kind,
        "type": type_,
        "source": source,
        "org": "acme",
        "occurred_at": at,
        "received_at": at,
        "labels": {},
        "annotations": {},
        "payload": None,
    }


def _webhook_payload(provider: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"provider": provider, "action": action, "body_json": json.dumps(body, sort_keys=True)}


_PR_TYPES = {
    "opened": "pr.opened",
    "synchronize": "pr.synchronize",
    "closed": "pr.closed",
    "reopened": "pr.reopened",
    "edited": "pr.edited",
    "ready_for_review": "pr.ready_for_review",
    "review_requested": "pr.review_requested",
}


def _pr(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    pr = entry["pr"]
    action = pr["action"]
    ev.update(kind="webhook", type=_PR_TYPES[action], source="github")
    body = {
        "action": action,
        "number": int(hashlib.sha256(entry["id"].encode()).hexdigest()[:4], 16) % 2000,
        "pull_request": {
            "title": pr["title"],
            "body": pr.get("body", ""),
            "draft": bool(pr.get("draft", False)),
            "merged": bool(pr.get("merged", False)),
            "state": "closed" if action == "closed" else "open",
            "labels": [{"name": name} for name in pr.get("labels", [])],
            "user": {"login": pr.get("user", "dev-" + entry["id"][-2:])},
            "base": {"ref": "main"},
        },
        "repository": {"full_name": entry["service"]},
    }
    ev["payload"] = _webhook_payload("github", action, body)


_MR_TYPES = {"open": "pr.opened", "update": "pr.synchronize", "merge": "pr.closed", "close": "pr.closed"}


def _mr(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    mr = entry["mr"]
    ev.update(kind="webhook", type=_MR_TYPES[mr["action"]], source="gitlab")
    body = {
        "object_kind": "merge_request",
        "object_attributes": {
            "title": mr["title"],
            "description": mr.get("description", ""),
            "action": mr["action"],
            "state": "merged" if mr["action"] == "merge" else ("closed" if mr["action"] == "close" else "opened"),
        },
        "labels": [{"title": name} for name in mr.get("labels", [])],
        "project": {"path_with_namespace": entry["service"].split(":", 1)[-1]},
    }
    ev["payload"] = _webhook_payload("gitlab", mr["action"], body)


def _scan(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    scan = entry["scan"]
    ev.update(kind="scan", type="scan.completed", source="scanner")
    findings = [
        {
            "resource": f.get("resource", ""),
            "change_type": f.get("change_type", "update"),
            "rule": f.get("rule", ""),
            "severity": f.get("severity", "medium"),
            "detail": f.get("detail", ""),
        }
        for f in scan.get("findings", [])
    ]
    ev["payload"] = {
        "scan_type": scan["scan_type"],
        "config_id": entry["service"],
        "status": scan["status"],
        "findings": findings,
    }


def _webhook(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    hook = entry["webhook"]
    ev.update(kind="webhook", type=hook["type"], source=hook["provider"])
    ev["payload"] = _webhook_payload(hook["provider"], hook["action"], hook["body"])


def _github(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    hook = entry["github"]
    ev.update(kind="webhook", type=f"{hook['event']}.{hook['action']}", source="github")
    body = dict(hook["body"], action=hook["action"], repository={"full_name": entry["service"]})
    ev["payload"] = _webhook_payload("github", hook["action"], body)


def _pagerduty(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    pd = entry["pagerduty"]
    event_type = pd["event_type"]
    ev.update(kind="webhook", type=event_type, source="pagerduty")
    data: dict[str, Any] = {
        "type": "incident",
        "title": pd["title"],
        "urgency": pd.get("urgency", "high"),
        "status": event_type.split(".", 1)[1],
        "service": {"summary": pd.get("service", "")},
    }
    if pd.get("priority"):
        data["priority"] = {"summary": pd["priority"]}
    body = {"event": {"event_type": event_type, "resource_type": "incident", "data": data}}
    ev["payload"] = _webhook_payload("pagerduty", event_type.split(".", 1)[1], body)


_OPSGENIE_TYPES = {"Create": "incident.triggered", "Acknowledge": "incident.acknowledged", "Close": "incident.resolved"}


def _opsgenie(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    og = entry["opsgenie"]
    ev.update(kind="webhook", type=_OPSGENIE_TYPES[og["action"]], source="opsgenie")
    body = {
        "action": og["action"],
        "alert": {
            "message": og["message"],
            "priority": og.get("priority", "P3"),
            "tags": og.get("tags", []),
            "source": og.get("source", ""),
        },
    }
    ev["payload"] = _webhook_payload("opsgenie", og["action"].lower(), body)


def _grafana(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    gf = entry["grafana"]
    firing = gf["state"] == "alerting"
    ev.update(kind="webhook", type="alert.firing" if firing else "alert.resolved", source="grafana")
    body = {
        "state": gf["state"],
        "status": "firing" if firing else "resolved",
        "title": gf["title"],
        "message": gf.get("message", ""),
        "commonLabels": gf.get("labels", {}),
    }
    ev["payload"] = _webhook_payload("grafana", "firing" if firing else "resolved", body)


def _timer(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    tm = entry["timer"]
    ev.update(kind="timer", type="timer.fired", source="opsloop")
    ev["payload"] = {"timer": tm["timer"], "step": tm.get("step", 0), "reason": tm.get("note", "")}


def _sample(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    smp = entry["sample"]
    ev.update(kind="telemetry", type="sample", source="prometheus")
    ev["labels"] = dict({"__name__": smp["metric"]}, **smp.get("labels", {}))
    ev["payload"] = {"value": smp["value"]}


_EXPANDERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "pr": _pr,
    "mr": _mr,
    "scan": _scan,
    "webhook": _webhook,
    "github": _github,
    "pagerduty": _pagerduty,
    "opsgenie": _opsgenie,
    "grafana": _grafana,
    "timer": _timer,
    "sample": _sample,
}


def expand_entry(entry: dict[str, Any], n: int = 0) -> LabelledExample:
    """Turn one compact YAML entry into a labelled event (pure)."""
    entry_id = str(entry.get("id", f"#{n}"))
    kinds = [key for key in _EXPANDERS if key in entry]
    if len(kinds) != 1:
        raise ExampleFormatError(f"example {entry_id}: needs exactly one of {sorted(_EXPANDERS)}")
    for field in ("group", "service", "category", "severity"):
        if not entry.get(field):
            raise ExampleFormatError(f"example {entry_id}: missing {field}")
    if entry["category"] not in CATEGORIES:
        raise ExampleFormatError(f"example {entry_id}: category {entry['category']!r} not in taxonomy")
    if entry["severity"] not in SEVERITIES:
        raise ExampleFormatError(f"example {entry_id}: severity {entry['severity']!r} not in {SEVERITIES}")
    ev = _envelope(entry_id, "webhook", "", "", n)
    try:
        _EXPANDERS[kinds[0]](entry, ev)
    except (KeyError, TypeError, IndexError) as exc:
        raise ExampleFormatError(f"example {entry_id}: {kinds[0]} entry malformed ({exc!r})") from exc
    return LabelledExample(
        id=entry_id,
        group=str(entry["group"]),
        service=str(entry["service"]),
        category=str(entry["category"]),
        severity=str(entry["severity"]),
        event=ev,
    )


def load_examples(path: str | Path | None = None) -> list[LabelledExample]:
    """Read and expand every hand-labelled example, in file order."""
    with Path(path or EXAMPLES_PATH).open("rb") as fh:
        entries = yaml.safe_load(fh) or []
    examples = [expand_entry(entry, n) for n, entry in enumerate(entries)]
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise ExampleFormatError(f"duplicate example id {ex.id}")
        seen.add(ex.id)
    return examples
