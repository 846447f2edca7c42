"""The awesome-prometheus-alerts catalogue, rendered into opsloop events.

Credit: "Awesome Prometheus alerts" by Samuel Berthe and contributors, CC BY 4.0
(https://github.com/samber/awesome-prometheus-alerts). The catalogue is vendored in
classifier/data/sources/awesome-prometheus-alerts/ with its licence and attribution.

Rendering is pure (same rule and arguments, same event) so demo traffic, tests and
training all see rules exactly the way Prometheus / Alertmanager would deliver them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import yaml

from streams.errors import NotFoundError

RULES_ENV = "OPSLOOP_RULES_PATH"
VENDORED_RULES = Path(__file__).resolve().parent / "data" / "sources" / "awesome-prometheus-alerts" / "rules.yml"
DEFAULT_OCCURRED_AT = 1_700_000_000_000


class DatasetNotFoundError(NotFoundError, FileNotFoundError):
    """The rules catalogue is not where opsloop looks for it."""


@dataclass(frozen=True)
class Rule:
    """One alerting rule of the catalogue, with where it sits in it.

    ``index`` is the rule's position in the file; it keeps ids stable and lets two
    rules with the same name (a few exist across exporters) stay distinct.
    """

    group: str
    service: str
    exporter: str
    name: str
    description: str
    query: str
    severity: str
    for_: str | None
    index: int


def default_rules_path() -> Path:
    """Where the catalogue lives: $OPSLOOP_RULES_PATH, else the copy vendored in the repository."""
    env = os.environ.get(RULES_ENV)
    if env:
        return Path(env)
    return VENDORED_RULES


def load_rules(path: str | os.PathLike[str] | None = None) -> list[Rule]:
    """Read every rule of the catalogue, in file order."""
    rules_path = Path(path) if path is not None else default_rules_path()
    if not rules_path.is_file():
        raise DatasetNotFoundError(
            f"alert rules catalogue not found at {rules_path}; set {RULES_ENV} to the "
            "path of awesome-prometheus-alerts rules.yml"
        )
    with rules_path.open("rb") as fh:
        doc = yaml.safe_load(fh)
    rules: list[Rule] = []
    for group in doc.get("groups") or []:
        for service in group.get("services") or []:
            for exporter in service.get("exporters") or []:
                for raw in exporter.get("rules") or []:
                    rules.append(
                        Rule(
                            group=str(group["name"]),
                            service=str(service["name"]),
                            exporter=str(exporter.get("slug") or exporter.get("name") or ""),
                            name=str(raw["name"]).strip(),
                            description=str(raw.get("description") or "").strip(),
                            query=str(raw.get("query") or "").strip(),
                            severity=str(raw.get("severity") or "").strip().lower(),
                            for_=str(raw["for"]) if raw.get("for") is not None else None,
                            index=len(rules),
                        )
                    )
    return rules


_WORD = re.compile(r"[A-Za-z0-9]+")
_TEMPLATE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_LABEL_REF = re.compile(r"^\$labels\.([A-Za-z_][A-Za-z0-9_]*)")


def alert_name(rule_name: str) -> str:
    """The CamelCase alertname Prometheus users give a rule ("Host out of memory" -> HostOutOfMemory).

    Matches the catalogue's own convention: each word capitalised, the rest lowered, so
    "Host high CPU load" becomes HostHighCpuLoad; punctuation is dropped.
    """
    return "".join(w[0].upper() + w[1:].lower() for w in _WORD.findall(rule_name))


def _slug(text: str) -> str:
    return "-".join(w.lower() for w in _WORD.findall(text))


def job_name(rule: Rule) -> str:
    """A plausible scrape job label: the exporter slug, or the service when the slug is generic."""
    if rule.exporter and not rule.exporter.startswith("embedded-exporter"):
        return rule.exporter
    return _slug(rule.service)


def render_template(text: str, labels: dict[str, str], value: str = "42") -> str:
    """Expand the {{ }} placeholders the way Alertmanager would, with fixed sample values."""

    def expand(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr.startswith("$value"):
            return value
        ref = _LABEL_REF.match(expr)
        if ref:
            return labels.get(ref.group(1), ref.group(1))
        if expr.startswith("$labels"):
            return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(labels.items())) + "]"
        return ""

    return _TEMPLATE.sub(expand, text)


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def generator_url(query: str, host: str = "http://prometheus:9090") -> str:
    """The link Prometheus attaches to an alert, carrying the rule's PromQL as g0.expr."""
    return f"{host}/graph?g0.expr={quote_plus(query)}&g0.tab=1"


def rule_to_event(
    rule: Rule,
    *,
    org: str = "acme",
    occurred_at: int = DEFAULT_OCCURRED_AT,
    instance: str | None = None,
    include_severity: bool = True,
    status: str = "firing",
    source: str = "alertmanager",
) -> dict[str, Any]:
    """Render one rule as the event opsloop's ingest would produce for it.

    ``include_severity=False`` drops labels.severity, for checking that the classifier
    still reads severity from the text when a sender omits the label.
    """
    name = alert_name(rule.name)
    job = job_name(rule)
    if instance is None:
        instance = f"{job}-{rule.index % 7}.{org}.internal:9100"
    labels: dict[str, str] = {"alertname": name, "instance": instance, "job": job}
    if include_severity and rule.severity:
        labels["severity"] = rule.severity
    fingerprint = _digest(org, name, instance)[:16]
    summary = f"{rule.name} (instance {instance})"
    description = render_template(rule.description, labels)
    firing = status == "firing"
    return {
        "event_id": f"rule-{_digest(rule.index, rule.service, rule.name, status, occurred_at)[:20]}",
        "session_key": f"{org}:alert:{fingerprint}",
        "kind": "telemetry",
        "type": "alert.firing" if firing else "alert.resolved",
        "source": source,
        "org": org,
        "occurred_at": occurred_at,
        "received_at": occurred_at,
        "labels": labels,
        "annotations": {"summary": summary, "description": description},
        "payload": {
            "status": status,
            "starts_at": occurred_at,
            "ends_at": None if firing else occurred_at + 60_000,
            "generator_url": generator_url(rule.query),
            "fingerprint": fingerprint,
        },
    }
